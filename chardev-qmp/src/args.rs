//! A command's arguments, checked as QEMU checks them: missing, wrong type, unexpected.

use serde_json::{Map, Value};

use crate::error::QmpError;

/// The `arguments` of one command. A handler takes what it knows; whatever is left when it
/// returns is an error ("Parameter 'x' is unexpected"), as QEMU's generated code has it.
#[derive(Debug, Default)]
pub struct Args {
    map: Map<String, Value>,
}

impl Args {
    /// The arguments of a command.
    pub fn new(map: Map<String, Value>) -> Args {
        Args { map }
    }

    /// Takes an argument as it is, if given.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// Takes every argument left (a command whose arguments are open-ended, `object-add`).
    pub fn take_all(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.map)
    }

    /// A required argument of any type.
    pub fn value(&mut self, name: &str) -> Result<Value, QmpError> {
        self.take(name).ok_or_else(|| QmpError::generic(format!("Parameter '{name}' is missing")))
    }

    /// A required string.
    pub fn string(&mut self, name: &str) -> Result<String, QmpError> {
        match self.value(name)? {
            Value::String(s) => Ok(s),
            _ => Err(wrong_type(name, "string")),
        }
    }

    /// An optional string.
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "string")),
        }
    }

    /// A required integer.
    pub fn integer(&mut self, name: &str) -> Result<i64, QmpError> {
        self.value(name)?.as_i64().ok_or_else(|| wrong_type(name, "integer"))
    }

    /// An optional integer.
    pub fn opt_int(&mut self, name: &str) -> Result<Option<i64>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| wrong_type(name, "integer")),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(wrong_type(name, "boolean")),
        }
    }

    /// An optional array.
    pub fn opt_array(&mut self, name: &str) -> Result<Option<Vec<Value>>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(wrong_type(name, "array")),
        }
    }

    /// Fails on any argument nobody asked for.
    pub fn done(self) -> Result<(), QmpError> {
        match self.map.keys().next() {
            Some(k) => Err(QmpError::generic(format!("Parameter '{k}' is unexpected"))),
            None => Ok(()),
        }
    }
}

/// QEMU's text for an argument of the wrong type.
pub fn wrong_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!("Invalid parameter type for '{name}', expected: {expected}"))
}
