//! Starts and stops a real memcached and talks to it over TCP.

use std::time::Duration;

use sluice_testkit::MemcachedServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test]
async fn memcached_set_get_and_stop() {
    let mut server = MemcachedServer::start().await;
    let address = server.address();

    let mut conn = BufReader::new(TcpStream::connect(&address).await.unwrap());
    conn.get_mut()
        .write_all(b"set sluice:key 0 60 5\r\nhello\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    assert_eq!(line, "STORED\r\n");

    conn.get_mut()
        .write_all(b"get sluice:key\r\n")
        .await
        .unwrap();
    line.clear();
    conn.read_line(&mut line).await.unwrap();
    assert_eq!(line, "VALUE sluice:key 0 5\r\n");
    let mut data = [0u8; 7];
    conn.read_exact(&mut data).await.unwrap();
    assert_eq!(&data, b"hello\r\n");
    line.clear();
    conn.read_line(&mut line).await.unwrap();
    assert_eq!(line, "END\r\n");
    drop(conn);

    let status = server.process().terminate(Duration::from_secs(5)).await;
    // memcached shuts down cleanly on SIGTERM (in ~0.5 s).
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect(&address).await.is_err(),
        "memcached still accepting connections after terminate()"
    );
}
