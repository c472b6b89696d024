//! The parts of a `multipart/x-mixed-replace` stream, the MJPEG of ESP32-CAMs, mjpg-streamer, motion and
//! OctoPrint: a boundary line, a part's headers, its picture, and again, for as long as the connection lasts.
//! Everything is bounded: a part over the size limit is read past, not kept; a stream that never shows its
//! boundary is an error once it has sent more than a part may hold.

use std::io::{self, Read};

use anyhow::{Result, bail};

/// Header lines are short; a longer one is not a header.
const MAX_LINE: usize = 1024;
const MAX_HEADERS: usize = 64;
/// How much is read from the connection at a time.
const CHUNK: usize = 64 * 1024;

/// The boundary a `Content-Type: multipart/x-mixed-replace; boundary=...` header announces, or `None` when the
/// header is another type or names none.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/x-mixed-replace") {
        return None;
    }
    params.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    Picture(Vec<u8>),
    /// A part larger than the limit, reported as soon as that is known and read past before the next one; its
    /// size if its headers gave one.
    Oversized {
        bytes: Option<u64>,
    },
}

/// What is read past before the next part.
enum Skip {
    Bytes(u64),
    ToDelimiter,
}

pub struct Parts<R> {
    source: R,
    /// Read ahead: `buffer[start..]` is not consumed yet.
    buffer: Vec<u8>,
    start: usize,
    /// The line that opens a part: `--` and the boundary.
    delimiter: Vec<u8>,
    limit: usize,
    /// Bytes that belonged to no part, between two of them, since the stream began.
    pub garbage: u64,
    skipping: Option<Skip>,
    /// Within a line longer than `MAX_LINE`, which is read past a piece at a time.
    in_long_line: bool,
    finished: bool,
}

enum Line {
    Text(Vec<u8>),
    /// Longer than `MAX_LINE`; read past.
    Long(usize),
}

impl<R: Read> Parts<R> {
    /// `limit`: the largest part kept, in bytes.
    pub fn new(source: R, boundary: &str, limit: usize) -> Parts<R> {
        // Some servers announce `boundary=--frame` and write `--frame` lines, against RFC 2046's `----frame`.
        let boundary = boundary.strip_prefix("--").unwrap_or(boundary);
        Parts {
            source,
            buffer: Vec::with_capacity(CHUNK),
            start: 0,
            delimiter: format!("--{boundary}").into_bytes(),
            limit,
            garbage: 0,
            skipping: None,
            in_long_line: false,
            finished: false,
        }
    }

    /// The next part, or `None` once the stream ended (or sent its closing boundary).
    pub fn next_part(&mut self) -> Result<Option<Part>> {
        let part = self.read_part()?;
        if part.is_none() {
            self.finished = true;
        }
        Ok(part)
    }

    fn read_part(&mut self) -> Result<Option<Part>> {
        if self.finished {
            return Ok(None);
        }
        if let Some(skip) = self.skipping.take()
            && !self.skip(skip)?
        {
            return Ok(None);
        }
        if !self.find_delimiter()? {
            return Ok(None);
        }
        let Some(length) = self.headers()? else {
            return Ok(None);
        };
        match length {
            Some(length) if length > self.limit as u64 => {
                self.skipping = Some(Skip::Bytes(length));
                Ok(Some(Part::Oversized {
                    bytes: Some(length),
                }))
            }
            Some(length) => self.sized_body(length),
            None => self.delimited_body(),
        }
    }

    /// Reads past what `skip` says; `false` if the stream ended first.
    fn skip(&mut self, skip: Skip) -> Result<bool> {
        match skip {
            Skip::Bytes(mut left) => {
                while left > 0 {
                    if self.pending().is_empty() && !self.fill()? {
                        return Ok(false);
                    }
                    let take = (self.pending().len() as u64).min(left);
                    self.start += take as usize;
                    left -= take;
                }
                Ok(true)
            }
            Skip::ToDelimiter => {
                let marker = self.marker();
                loop {
                    if let Some(at) = memchr::memmem::find(self.pending(), &marker) {
                        self.start += at + 1;
                        return Ok(true);
                    }
                    // The marker may straddle what was read and what comes next.
                    self.start += self.pending().len().saturating_sub(marker.len() - 1);
                    if !self.fill()? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// A line break and the delimiter: where a part without a Content-Length ends.
    fn marker(&self) -> Vec<u8> {
        let mut marker = Vec::with_capacity(self.delimiter.len() + 1);
        marker.push(b'\n');
        marker.extend_from_slice(&self.delimiter);
        marker
    }

    /// Reads more; `false` at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 && self.start >= self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let old = self.buffer.len();
        self.buffer.resize(old + CHUNK, 0);
        let read = loop {
            match self.source.read(&mut self.buffer[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.buffer.truncate(old + *read.as_ref().unwrap_or(&0));
        Ok(read? > 0)
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// The next line without its line break, or `None` at the end of the stream. A line longer than
    /// `MAX_LINE` comes as `Long` pieces, so that an endless one cannot fill the memory.
    fn line(&mut self) -> Result<Option<Line>> {
        let mut scanned = 0;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.pending()[scanned..]) {
                let end = scanned + at;
                let line = &self.pending()[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = if end > MAX_LINE || self.in_long_line {
                    Line::Long(end + 1)
                } else {
                    Line::Text(line.to_vec())
                };
                self.in_long_line = false;
                self.start += end + 1;
                return Ok(Some(line));
            }
            scanned = self.pending().len();
            if scanned > MAX_LINE || (self.in_long_line && scanned > 0) {
                self.in_long_line = true;
                self.start += scanned;
                return Ok(Some(Line::Long(scanned)));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads up to and through the next delimiter line; `false` at the end of the stream or at the closing
    /// delimiter. Blank lines before it are allowed; anything else is counted as garbage.
    fn find_delimiter(&mut self) -> Result<bool> {
        let mut skipped = 0u64;
        loop {
            let line = match self.line()? {
                None => return Ok(false),
                Some(Line::Long(length)) => {
                    skipped += length as u64;
                    self.garbage += length as u64;
                    self.check_skipped(skipped)?;
                    continue;
                }
                Some(Line::Text(line)) => line,
            };
            let line = line.trim_ascii_end();
            if let Some(rest) = line.strip_prefix(self.delimiter.as_slice()) {
                if rest.is_empty() {
                    return Ok(true);
                }
                if rest == b"--" {
                    self.finished = true;
                    return Ok(false);
                }
            }
            if !line.is_empty() {
                skipped += line.len() as u64 + 1;
                self.garbage += line.len() as u64 + 1;
                self.check_skipped(skipped)?;
            }
        }
    }

    fn check_skipped(&self, skipped: u64) -> Result<()> {
        if skipped > self.limit as u64 {
            bail!(
                "no part boundary `{}` in {skipped} bytes: the stream is not the multipart/x-mixed-replace \
                 its Content-Type says",
                String::from_utf8_lossy(&self.delimiter)
            );
        }
        Ok(())
    }

    /// A part's headers: its Content-Length if it gives one (`Some(None)` if not), or `None` at the end of the
    /// stream.
    fn headers(&mut self) -> Result<Option<Option<u64>>> {
        let mut length = None;
        for _ in 0..MAX_HEADERS {
            let line = match self.line()? {
                None => return Ok(None),
                Some(Line::Long(size)) => bail!("a part's header line is {size} bytes long"),
                Some(Line::Text(line)) => line,
            };
            if line.trim_ascii().is_empty() {
                return Ok(Some(length));
            }
            let text = String::from_utf8_lossy(&line);
            if let Some((name, value)) = text.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<u64>().ok();
            }
        }
        bail!("a part has more than {MAX_HEADERS} header lines")
    }

    /// A body of `length` bytes (within the limit), or `None` if the stream ended within it.
    fn sized_body(&mut self, length: u64) -> Result<Option<Part>> {
        let length = length as usize;
        while self.pending().len() < length {
            if !self.fill()? {
                return Ok(None);
            }
        }
        let body = self.pending()[..length].to_vec();
        self.start += length;
        Ok(Some(Part::Picture(body)))
    }

    /// A body that ends where the next delimiter line begins, or `None` if the stream ended first. Over the
    /// limit, it is reported as soon as that is certain and read past before the next part.
    fn delimited_body(&mut self) -> Result<Option<Part>> {
        let marker = self.marker();
        let limit = self.limit;
        let mut scanned = 0;
        loop {
            if let Some(at) = memchr::memmem::find(&self.pending()[scanned..], &marker) {
                let end = scanned + at;
                let body = &self.pending()[..end];
                let body = body.strip_suffix(b"\r").unwrap_or(body);
                let part = if body.len() > limit {
                    Part::Oversized { bytes: None }
                } else {
                    Part::Picture(body.to_vec())
                };
                // The delimiter line is the next part's, read by `find_delimiter`.
                self.start += end + 1;
                return Ok(Some(part));
            }
            let pending = self.pending().len();
            // The marker may straddle what was read and what comes next.
            scanned = pending.saturating_sub(marker.len() - 1);
            // Of the bytes before where the marker could start, one may be the `\r` of its line break.
            if scanned.saturating_sub(1) > limit {
                self.start += scanned;
                self.skipping = Some(Skip::ToDelimiter);
                return Ok(Some(Part::Oversized { bytes: None }));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(stream: &[u8], limit: usize) -> (Vec<Part>, Result<()>, u64) {
        let mut parts = Parts::new(stream, "frame", limit);
        let mut found = Vec::new();
        loop {
            match parts.next_part() {
                Ok(Some(part)) => found.push(part),
                Ok(None) => return (found, Ok(()), parts.garbage),
                Err(e) => return (found, Err(e), parts.garbage),
            }
        }
    }

    fn picture(bytes: &[u8]) -> Part {
        Part::Picture(bytes.to_vec())
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary("multipart/x-mixed-replace; boundary=123456789000000000000987654321")
                .as_deref(),
            Some("123456789000000000000987654321")
        );
        assert_eq!(
            boundary("Multipart/X-Mixed-Replace;boundary=\"--myboundary\"").as_deref(),
            Some("--myboundary")
        );
        assert_eq!(boundary("image/jpeg"), None);
        assert_eq!(boundary("multipart/x-mixed-replace"), None);
        assert_eq!(boundary("multipart/x-mixed-replace; boundary="), None);
    }

    #[test]
    fn parts_with_and_without_their_length_are_read() {
        let stream = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nab\r\nc\r\n\
            --frame\r\nContent-Type: image/jpeg\r\n\r\nxyz\r\n--frame\r\n\r\nq\n--frame--\r\n";
        let (found, outcome, garbage) = parts(stream, 100);
        outcome.unwrap();
        assert_eq!(
            found,
            vec![picture(b"ab\r\nc"), picture(b"xyz"), picture(b"q")]
        );
        assert_eq!(garbage, 0);
    }

    #[test]
    fn garbage_between_parts_is_counted_and_passed_over() {
        let stream = b"preamble\r\n--frame\r\nContent-Length: 2\r\n\r\nab\r\nnoise noise\r\n\r\n\
            --frame\r\nContent-Length: 2\r\n\r\ncd";
        let (found, outcome, garbage) = parts(stream, 100);
        outcome.unwrap();
        assert_eq!(found, vec![picture(b"ab"), picture(b"cd")]);
        assert_eq!(
            garbage,
            b"preamble\n".len() as u64 + b"noise noise\n".len() as u64
        );
    }

    #[test]
    fn a_part_over_the_limit_is_read_past() {
        let big = vec![b'x'; 300];
        for with_length in [true, false] {
            let mut stream = b"--frame\r\n".to_vec();
            if with_length {
                stream.extend_from_slice(b"Content-Length: 300\r\n");
            }
            stream.extend_from_slice(b"\r\n");
            stream.extend_from_slice(&big);
            stream.extend_from_slice(b"\r\n--frame\r\nContent-Length: 2\r\n\r\nok\r\n");
            let (found, outcome, _) = parts(&stream, 100);
            outcome.unwrap();
            let bytes = with_length.then_some(300);
            assert_eq!(
                found,
                vec![Part::Oversized { bytes }, picture(b"ok")],
                "with Content-Length: {with_length}"
            );
        }
    }

    #[test]
    fn a_stream_without_boundaries_is_an_error() {
        let stream = vec![b'\xff'; 5000];
        let (found, outcome, _) = parts(&stream, 1000);
        assert!(found.is_empty());
        let error = outcome.unwrap_err().to_string();
        assert!(
            error.starts_with("no part boundary `--frame` in "),
            "{error}"
        );
    }

    #[test]
    fn a_stream_that_ends_within_a_part_ends_without_it() {
        let (found, outcome, _) = parts(b"--frame\r\nContent-Length: 10\r\n\r\nabc", 100);
        outcome.unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn a_boundary_announced_with_its_dashes_is_found() {
        let mut parts = Parts::new(&b"--frame\r\n\r\nab\r\n--frame--"[..], "--frame", 100);
        assert_eq!(parts.next_part().unwrap(), Some(picture(b"ab")));
        assert_eq!(parts.next_part().unwrap(), None);
    }
}
