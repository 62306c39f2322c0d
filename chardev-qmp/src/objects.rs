//! `object-add` and `object-del` for the objects chardevs name: `tls-creds-x509`,
//! `authz-simple`, `authz-list` ([`chardev::objects`]), with QEMU's flat JSON arguments.
//!
//! `{"execute": "object-add", "arguments": {"qom-type": "tls-creds-x509", "id": "tls0",
//! "dir": "/etc/pki/qemu", "endpoint": "server", "verify-peer": true}}`; an `authz-list`
//! takes `"rules": [{"match": "CN=*,O=Example", "policy": "allow", "format": "glob"}]`.

use chardev::objects::{authz_rule, AuthzRule, Object};
use serde_json::{Map, Value};

/// Builds an object from QMP's `object-add` arguments (or a JSON `-object`): every member
/// but `qom-type` and `rules` is a property whose value is a string, a boolean or a number.
pub fn object_from_json(args: &Map<String, Value>) -> Result<Object, String> {
    let kind = match args.get("qom-type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err("Invalid parameter type for 'qom-type', expected: string".into()),
        None => return Err("Parameter 'qom-type' is missing".into()),
    };
    let mut props = Vec::new();
    let mut rules = Vec::new();
    for (key, value) in args {
        match (key.as_str(), value) {
            ("qom-type", _) => {}
            ("rules", Value::Array(list)) => {
                for (i, rule) in list.iter().enumerate() {
                    rules.push(rule_from_json(i, rule)?);
                }
            }
            ("rules", _) => {
                return Err("Invalid parameter type for 'rules', expected: array".into())
            }
            // QMP's older form nests the properties in "props".
            ("props", Value::Object(inner)) => {
                for (k, v) in inner {
                    props.push((k.clone(), scalar(k, v)?));
                }
            }
            (key, value) => props.push((key.to_string(), scalar(key, value)?)),
        }
    }
    Object::from_properties(&kind, props, rules).map_err(|e| match e {
        // QEMU's "invalid object type: X" stands alone, as in QEMU.
        chardev::Error::Option { key, reason, .. } if key == "qom-type" => reason,
        other => other.to_string(),
    })
}

/// A property's value as the option syntax writes it.
fn scalar(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(if *b { "on" } else { "off" }.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("Invalid parameter type for '{key}', expected: string or boolean")),
    }
}

fn rule_from_json(i: usize, rule: &Value) -> Result<AuthzRule, String> {
    let Value::Object(map) = rule else {
        return Err(format!("Invalid parameter type for 'rules[{i}]', expected: object"));
    };
    let member = |name: &str| -> Result<Option<&str>, String> {
        match map.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => {
                Err(format!("Invalid parameter type for 'rules[{i}].{name}', expected: string"))
            }
        }
    };
    if let Some(unknown) = map.keys().find(|k| !matches!(k.as_str(), "match" | "policy" | "format"))
    {
        return Err(format!("Parameter 'rules[{i}].{unknown}' is unexpected"));
    }
    let pattern = member("match")?.ok_or(format!("Parameter 'rules[{i}].match' is missing"))?;
    let policy = member("policy")?.ok_or(format!("Parameter 'rules[{i}].policy' is missing"))?;
    authz_rule(pattern, policy, member("format")?).map_err(|e| format!("rules[{i}]: {e}"))
}

/// Parses a `-object` argument in either form: QEMU's `TYPE,id=ID,...` or JSON (`{...}`,
/// needed for an `authz-list`'s rules), as QEMU 7.2's command line takes both.
pub fn parse_object_arg(arg: &str) -> Result<Object, String> {
    if arg.trim_start().starts_with('{') {
        let value: Value =
            serde_json::from_str(arg).map_err(|e| format!("-object: invalid JSON: {e}"))?;
        match value {
            Value::Object(map) => object_from_json(&map),
            _ => Err("-object: JSON must be an object".into()),
        }
    } else {
        arg.parse::<Object>().map_err(|e| e.to_string())
    }
}
