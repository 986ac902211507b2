//! In-process TCP servers that misbehave on purpose, for tests that a cache
//! client turns garbage, silence and refusal into misses.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts a server on a free loopback port that answers every read, whatever
/// was asked, with `reply` (or never, if `None`), and returns its
/// `host:port`. It runs until the test's runtime ends.
pub async fn replying_server(reply: Option<&'static [u8]>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a fake server: {e}"));
    let address = listener
        .local_addr()
        .expect("local address of a bound listener")
        .to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(1..) = stream.read(&mut buf).await {
                    if let Some(reply) = reply {
                        let _ = stream.write_all(reply).await;
                    }
                }
            });
        }
    });
    address
}

/// A loopback `host:port` that nothing listens on (it was bound a moment
/// ago and released), so connecting is refused at once.
pub async fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a probe listener: {e}"));
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .to_string()
}
