//! The event on stdin (reference/stretcher.md §1–2): a bare manifest URL (a Serf
//! user-event payload) or a Consul watch's event array, whose newest event by `LTime`
//! is taken and its base64 payload decoded.

use std::io::{BufRead, Read};

use base64::Engine;
use serde::Deserialize;

use crate::deploy::log::DeployLog;

/// One event of a Consul watch (the fields read).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsulEvent {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(rename = "LTime", default)]
    ltime: u64,
}

/// What stdin said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub url: String,
    /// The Consul event id, when the event came from Consul.
    pub consul_id: Option<String>,
}

/// Largest stdin read (a Consul watch holds at most a few hundred small events).
const MAX_STDIN: u64 = 16 << 20;

/// Reads the event from stdin (reference/stretcher.md §1–2).
pub fn read_event<R: BufRead>(
    mut input: R,
    consul_index: bool,
    log: &DeployLog,
) -> Result<Event, String> {
    let first = input
        .fill_buf()
        .map_err(|e| format!("could not parse event: {e}"))?
        .first()
        .copied();
    let Some(first) = first else {
        return Err("could not parse event: EOF".into());
    };
    if consul_index || first == b'[' {
        log.line("Reading Consul event");
        let mut buf = Vec::new();
        input
            .take(MAX_STDIN)
            .read_to_end(&mut buf)
            .map_err(|e| format!("could not parse event: {e}"))?;
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Vec<ConsulEvent>>();
        let events = match stream.next() {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Err(format!("could not parse event: {e}")),
            None => return Err("could not parse event: EOF".into()),
        };
        // The newest by LTime; on a tie, the later element (stretcher's choice).
        let ev = events
            .iter()
            .enumerate()
            .max_by_key(|(i, e)| (e.ltime, *i))
            .map(|(_, e)| e)
            .ok_or("could not parse event: No Consul events found")?;
        log.line(format!(
            "Consul event ID: {} (name {}, LTime {})",
            ev.id, ev.name, ev.ltime
        ));
        let url = match &ev.payload {
            None => String::new(),
            Some(p) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .map_err(|e| format!("could not parse event: Payload: {e}"))?;
                String::from_utf8(bytes)
                    .map_err(|_| "could not parse event: Payload is not UTF-8".to_string())?
            }
        };
        Ok(Event {
            url,
            consul_id: Some(ev.id.clone()).filter(|i| !i.is_empty()),
        })
    } else {
        if let Ok(name) = std::env::var("SERF_USER_EVENT") {
            log.line(format!("Reading Serf user event: {name}"));
        }
        let mut line = Vec::new();
        input
            .take(MAX_STDIN)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("could not parse event: {e}"))?;
        let line =
            String::from_utf8(line).map_err(|_| "could not parse event: not UTF-8".to_string())?;
        Ok(Event {
            url: line.trim_matches('\n').to_string(),
            consul_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(p: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/stretcher/{p}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn stdin_forms() {
        let log = DeployLog::new(false);
        let ev = read_event(&fixture("stdin/raw-url.txt")[..], false, &log).unwrap();
        assert_eq!(
            ev,
            Event {
                url: "s3://example.com/deploy-20141117-112233.yml".into(),
                consul_id: None
            }
        );
        let ev = read_event(&fixture("stdin/raw-url-no-lf.txt")[..], false, &log).unwrap();
        assert_eq!(ev.url, "s3://example.com/deploy-20141117-112233.yml");
        assert_eq!(
            read_event(&b"\nhttp://x/y\n"[..], false, &log).unwrap().url,
            ""
        );
        assert_eq!(read_event(&b"a\r\nb"[..], false, &log).unwrap().url, "a\r");
        assert_eq!(
            read_event(&b""[..], false, &log).unwrap_err(),
            "could not parse event: EOF"
        );
        let ev = read_event(&fixture("consul/ConsulInput2.json")[..], false, &log).unwrap();
        assert_eq!(ev.url, "s3://example.com/path/to/app.tar.gz");
        assert_eq!(
            ev.consul_id.as_deref(),
            Some("b5ef1588-1bcd-d93f-5d9c-67cb6e8c4587")
        );
        let e = read_event(&fixture("consul/ConsulInput1.json")[..], false, &log).unwrap_err();
        assert_eq!(e, "could not parse event: No Consul events found");
        let ev = read_event(
            &fixture("consul/constructed-readme-deploy-event.json")[..],
            true,
            &log,
        )
        .unwrap();
        assert_eq!(ev.url, "s3://example.com/deploy-20141117-112233.yml");
        // Newest LTime wins even when it is not last.
        let reordered =
            r#"[{"ID":"b","LTime":3,"Payload":"YQ=="},{"ID":"a","LTime":2,"Payload":"Yg=="}]"#;
        let ev = read_event(reordered.as_bytes(), false, &log).unwrap();
        assert_eq!((ev.url.as_str(), ev.consul_id.as_deref()), ("a", Some("b")));
        assert!(
            read_event(&br#"[{"ID":"x","Payload":"!!"}]"#[..], false, &log)
                .unwrap_err()
                .contains("Payload")
        );
        assert!(read_event(&b"[{"[..], false, &log).is_err());
        assert_eq!(
            read_event(&br#"[{"ID":"x","Payload":null}]"#[..], false, &log)
                .unwrap()
                .url,
            ""
        );
    }
}
