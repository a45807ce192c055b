//! Socket Mode against a fake: `apps.connections.open` hands out a local WebSocket, which
//! says `hello` and sends a slash-command envelope from the fixtures; corral must ack it
//! with the reply as the ack payload.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::corral::Corral;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/slack/socket_mode/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_over_socket_mode_are_acked_with_the_reply() {
    let c = Corral::start().await;
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws.local_addr().unwrap();
    c.slack
        .set_socket_url(&format!("ws://{ws_addr}/link/?ticket=1"));

    let mut envelope = fixture("slash_commands.envelope.docs.json");
    envelope["payload"]["command"] = json!("/release");
    envelope["payload"]["text"] = json!("start over the socket");
    let hello = fixture("hello.docs.json");
    let server = tokio::spawn(async move {
        let (tcp, _) = ws.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
        socket.send(Message::text(hello.to_string())).await.unwrap();
        socket
            .send(Message::text(envelope.to_string()))
            .await
            .unwrap();
        // The first text frame back is the ack (pings are answered by the library).
        loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str::<Value>(&t).unwrap();
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("no ack: {other:?}"),
            }
        }
    });

    let token = corral::secret::Secret::new("xapp-1-test");
    let socket = corral::slack::socket::SocketMode::start(c.app.clone(), &token)
        .await
        .expect("socket mode starts");
    let ack = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("acked in time")
        .unwrap();
    assert_eq!(ack["envelope_id"], "dbdd0ef3-1543-4f94-bfb4-133d0e6c1545");
    assert_eq!(ack["payload"]["response_type"], "in_channel");
    assert_eq!(
        ack["payload"]["text"],
        "🚀 <@U123ABC456> started a release: over the socket"
    );
    assert_eq!(c.lock().await.running.unwrap().who, "U123ABC456");
    let opens = c.slack.calls_to("apps.connections.open");
    assert_eq!(opens[0].auth.as_deref(), Some("Bearer xapp-1-test"));
    socket.shutdown().await;
}
