//! MJPEG cameras on loopback: an HTTP server answering every connection with a multipart/x-mixed-replace
//! stream that a test's function writes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

pub fn jpeg() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket.jpg"))
        .unwrap()
}

/// Serves every connection: checks the request's Authorization against `authorization` (if given), answers with
/// `content_type` and then lets `stream` write the body until it returns or the client goes.
pub fn serve(
    content_type: &'static str,
    authorization: Option<&'static str>,
    stream: fn(&mut TcpStream) -> std::io::Result<()>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut connection = connection;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && connection.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                if let Some(expected) = authorization
                    && !head.contains(&format!("authorization: {}", expected.to_lowercase()))
                {
                    let _ = connection.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n");
                if connection.write_all(answer.as_bytes()).is_ok() {
                    // A client that went away ends the stream.
                    let _ = stream(&mut connection);
                }
            });
        }
    });
    url
}

pub const MULTIPART: &str = "multipart/x-mixed-replace; boundary=frame";

pub fn part(out: &mut TcpStream, body: &[u8], with_length: bool) -> std::io::Result<()> {
    let length = if with_length {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    out.write_all(format!("--frame\r\nContent-Type: image/jpeg\r\n{length}\r\n").as_bytes())?;
    out.write_all(body)?;
    out.write_all(b"\r\n")
}

pub fn good_camera(out: &mut TcpStream) -> std::io::Result<()> {
    let jpeg = jpeg();
    for index in 0.. {
        part(out, &jpeg, index % 2 == 0)?;
        thread::sleep(Duration::from_millis(40));
    }
    Ok(())
}

/// One frame, then silence with the connection open.
pub fn stalls(out: &mut TcpStream) -> std::io::Result<()> {
    part(out, &jpeg(), true)?;
    thread::sleep(Duration::from_secs(30));
    Ok(())
}

/// Frames with bytes between them that belong to no part.
pub fn noisy(out: &mut TcpStream) -> std::io::Result<()> {
    let jpeg = jpeg();
    loop {
        part(out, &jpeg, true)?;
        out.write_all(b"\x00\x01 this is no part \xff\xd8\r\n")?;
        thread::sleep(Duration::from_millis(40));
    }
}

/// Frames of 400 kB only.
pub fn only_big(out: &mut TcpStream) -> std::io::Result<()> {
    let mut big = jpeg();
    big.resize(400_000, 0);
    loop {
        part(out, &big, true)?;
        thread::sleep(Duration::from_millis(40));
    }
}

/// Bytes, but never a part boundary.
pub fn raw(out: &mut TcpStream) -> std::io::Result<()> {
    loop {
        out.write_all(&[0xab; 4096])?;
    }
}

/// Two pictures over 200 kB (with and without Content-Length), then one under it.
pub fn big_and_small(out: &mut TcpStream) -> std::io::Result<()> {
    let small = jpeg();
    let big =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/chelsea.png"))
            .unwrap();
    loop {
        part(out, &big, false)?;
        part(out, &big, true)?;
        part(out, &small, true)?;
        thread::sleep(Duration::from_millis(40));
    }
}
