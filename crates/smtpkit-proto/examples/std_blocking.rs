//! The "log every mail" server over blocking `std::net`, one thread per connection.
//!
//! `cargo run -p smtpkit-proto --example std_blocking -- 127.0.0.1:2525`, then send mail to it.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use smtpkit_proto::{Event, InBuf, Server, ServerConfig, ServerOptions};

fn serve(mut stream: TcpStream, id: u64, config: Arc<ServerConfig>) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut server = Server::new(config, Instant::now());
    let mut inbuf = InBuf::new(4096, 65536);
    let (mut from, mut to, mut head, mut size) = (String::new(), Vec::new(), Vec::new(), 0);
    while !server.is_closed() {
        loop {
            let progress = server.handle_input(Instant::now(), inbuf.data());
            let Some(event) = progress.event else {
                inbuf.consume(progress.consumed);
                break;
            };
            match event {
                Event::MailFrom { reverse_path, .. } => {
                    (from, to, head, size) = (reverse_path.to_string(), vec![], vec![], 0)
                }
                Event::RcptTo { forward_path, .. } => to.push(forward_path.to_string()),
                Event::DataChunk(chunk) => {
                    size += chunk.len();
                    head.extend_from_slice(
                        &chunk[..chunk.len().min(8192usize.saturating_sub(head.len()))],
                    );
                }
                Event::DataEnd | Event::BdatEnd { last: true } => {
                    let head = String::from_utf8_lossy(&head);
                    let subject = head
                        .lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix("Subject: "))
                        .unwrap_or("");
                    println!(
                        "session={id} peer={peer} from={from} to={} subject={subject:?} size={size}",
                        to.join(",")
                    );
                }
                _ => {}
            }
            if server.awaiting_decision() {
                server
                    .accept(Instant::now())
                    .expect("a decision is pending");
            }
            inbuf.consume(progress.consumed);
        }
        stream.write_all(server.poll_transmit())?;
        server.advance_transmit(server.poll_transmit().len());
        if server.is_closed() || !server.wants_input() {
            continue;
        }
        // A real server would also wait for `poll_timeout()`; see smtpkit-mio for that.
        let n = stream.read(inbuf.spare())?;
        if n == 0 {
            server.handle_eof(Instant::now());
        }
        inbuf.commit(n);
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2525".into());
    let config = Arc::new(ServerConfig::new(ServerOptions::default()).expect("valid options"));
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for (id, stream) in listener.incoming().enumerate() {
        let config = Arc::clone(&config);
        std::thread::spawn(move || {
            serve(stream?, id as u64, config).inspect_err(|e| eprintln!("session={id}: {e}"))
        });
    }
    Ok(())
}
