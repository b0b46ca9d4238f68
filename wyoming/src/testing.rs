//! Scripted Wyoming servers on loopback for the crate's tests.

use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::{Deadlines, Endpoint};
use crate::codec::{write_event, EventReader};
use crate::message::Message;

/// A server that accepts `connections` connections one after another and
/// runs `script` on each, returning what each received.
pub fn serve(
    connections: usize,
    script: impl Fn(usize, &mut EventReader<TcpStream>, &mut TcpStream) -> Vec<Message> + Send + 'static,
) -> (Endpoint, JoinHandle<Vec<Vec<Message>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        (0..connections)
            .map(|i| {
                let (stream, _) = listener.accept().unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = EventReader::new(stream);
                script(i, &mut reader, &mut writer)
            })
            .collect()
    });
    let endpoint = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    (endpoint, handle)
}

pub fn read_until(reader: &mut EventReader<TcpStream>, last: &str) -> Vec<Message> {
    let mut seen = Vec::new();
    while let Some(event) = reader.read_event().unwrap() {
        let kind = event.kind.clone();
        seen.push(Message::from_event(event).unwrap());
        if kind == last {
            break;
        }
    }
    seen
}

pub fn send(writer: &mut TcpStream, message: Message) {
    write_event(writer, &message.to_event()).unwrap();
}

pub fn quick() -> Deadlines {
    Deadlines {
        connect: Duration::from_millis(500),
        answer: Duration::from_millis(800),
    }
}
