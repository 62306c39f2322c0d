//! QMP errors: QEMU's error classes and texts.

use serde_json::{json, Value};

/// QEMU's error classes, as `{"error": {"class": ...}}` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Almost every error.
    GenericError,
    /// An unknown command, or a command before (or after) capabilities negotiation.
    CommandNotFound,
    /// A device named in the arguments does not exist.
    DeviceNotFound,
}

impl ErrorClass {
    /// The class as QMP spells it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
        }
    }
}

/// An error reply: QEMU's error class and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    /// The class.
    pub class: ErrorClass,
    /// The text.
    pub desc: String,
}

impl QmpError {
    /// A `GenericError` with this text.
    pub fn generic(desc: impl Into<String>) -> QmpError {
        QmpError { class: ErrorClass::GenericError, desc: desc.into() }
    }

    /// A `CommandNotFound` with this text.
    pub fn command_not_found(desc: impl Into<String>) -> QmpError {
        QmpError { class: ErrorClass::CommandNotFound, desc: desc.into() }
    }

    /// The `{"error": ...}` object of a reply.
    pub fn to_json(&self) -> Value {
        json!({"error": {"class": self.class.name(), "desc": self.desc}})
    }
}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.desc)
    }
}

impl std::error::Error for QmpError {}

impl From<chardev::Error> for QmpError {
    fn from(e: chardev::Error) -> QmpError {
        QmpError::generic(e.to_string())
    }
}

/// What a command returns: its `return` value, or the error.
pub type QmpResult = Result<Value, QmpError>;
