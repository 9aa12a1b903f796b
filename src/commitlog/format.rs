//! The binary form of a `LogCommit`, as the log, a recording file or (later) a replicated
//! stream carries it. All integers are big-endian; a string is a `u32` length and UTF-8 bytes;
//! bytes are a `u32` length and the bytes.
//!
//! | field | encoding |
//! |---|---|
//! | format | `u8`, 1 |
//! | seq | `u64` |
//! | ops | `u32` count, then per op: key (bytes), kind `u8` (1 put, 0 removal), for a put the value (bytes) |
//! | effects | `u32` count, then per effect: kind `u8` (1 topic, 2 subscription, 3 SearchParameter), id (string); a SearchParameter adds a `u8` flag and, when 1, the retired url (string) |
//! | lanes | `u32` count, then each subscription id (string) |
//! | check | `u32` CRC-32 (IEEE) of every byte before it |
//!
//! Keys and values are the store's own (`store::keys`, `store::records`): a commit replays on
//! any store of the same store format. A record that is short, has a wrong check, an unknown
//! format or kind, or trailing bytes does not decode (`LogError::Corrupt`); nothing panics.
//! A recording file (`recording`) is a sequence of records, each preceded by its `u32` length.

use super::{Effect, LogCommit, LogError};

/// The format byte this build writes and reads.
pub const FORMAT: u8 = 1;

/// Encodes `commit` (see the module doc).
pub fn encode(commit: &LogCommit) -> Vec<u8> {
    let size = 32 + commit.ops.iter().map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(FORMAT);
    out.extend_from_slice(&commit.seq.to_be_bytes());
    put_len(&mut out, commit.ops.len());
    for (key, value) in &commit.ops {
        put_bytes(&mut out, key);
        match value {
            Some(value) => {
                out.push(1);
                put_bytes(&mut out, value);
            }
            None => out.push(0),
        }
    }
    put_len(&mut out, commit.effects.len());
    for effect in &commit.effects {
        match effect {
            Effect::Topic(id) => {
                out.push(1);
                put_bytes(&mut out, id.as_bytes());
            }
            Effect::Subscription(id) => {
                out.push(2);
                put_bytes(&mut out, id.as_bytes());
            }
            Effect::SearchParameter { id, retired_url } => {
                out.push(3);
                put_bytes(&mut out, id.as_bytes());
                match retired_url {
                    Some(url) => {
                        out.push(1);
                        put_bytes(&mut out, url.as_bytes());
                    }
                    None => out.push(0),
                }
            }
        }
    }
    put_len(&mut out, commit.lanes.len());
    for lane in &commit.lanes {
        put_bytes(&mut out, lane.as_bytes());
    }
    let check = crc32fast::hash(&out);
    out.extend_from_slice(&check.to_be_bytes());
    out
}

/// Decodes one record (see the module doc).
pub fn decode(bytes: &[u8]) -> Result<LogCommit, LogError> {
    let Some(split) = bytes.len().checked_sub(4) else { return Err(corrupt("shorter than its check")) };
    let (body, check) = bytes.split_at(split);
    let stored = u32::from_be_bytes(check.try_into().map_err(|_| corrupt("no check"))?);
    if crc32fast::hash(body) != stored {
        return Err(corrupt("check does not match"));
    }
    let mut r = Reader { bytes: body };
    let format = r.u8()?;
    if format != FORMAT {
        return Err(corrupt(&format!("format {format}; this build reads {FORMAT}")));
    }
    let seq = r.u64()?;
    let count = r.count()?;
    let mut ops = Vec::with_capacity(count.min(r.bytes.len() / 5));
    for _ in 0..count {
        let key = r.bytes()?.to_vec();
        let value = match r.u8()? {
            1 => Some(r.bytes()?.to_vec()),
            0 => None,
            k => return Err(corrupt(&format!("op kind {k}"))),
        };
        ops.push((key, value));
    }
    let count = r.count()?;
    let mut effects = Vec::with_capacity(count.min(r.bytes.len() / 5));
    for _ in 0..count {
        let kind = r.u8()?;
        let id = r.string()?;
        effects.push(match kind {
            1 => Effect::Topic(id),
            2 => Effect::Subscription(id),
            3 => {
                let retired_url = match r.u8()? {
                    1 => Some(r.string()?),
                    0 => None,
                    f => return Err(corrupt(&format!("flag {f}"))),
                };
                Effect::SearchParameter { id, retired_url }
            }
            k => return Err(corrupt(&format!("effect kind {k}"))),
        });
    }
    let count = r.count()?;
    let mut lanes = Vec::with_capacity(count.min(r.bytes.len() / 4));
    for _ in 0..count {
        lanes.push(r.string()?);
    }
    if !r.bytes.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(LogCommit { seq, ops, effects, lanes })
}

fn corrupt(why: &str) -> LogError {
    LogError::Corrupt(why.to_string())
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Lengths past u32 cannot occur: a commit is bounded by the request and group limits.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        if self.bytes.len() < n {
            return Err(corrupt("ends early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, LogError> {
        self.take(1)?.first().copied().ok_or_else(|| corrupt("ends early"))
    }

    fn u64(&mut self) -> Result<u64, LogError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().map_err(|_| corrupt("u64"))?))
    }

    fn count(&mut self) -> Result<usize, LogError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(b.try_into().map_err(|_| corrupt("u32"))?) as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], LogError> {
        let n = self.count()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, LogError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt("a string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogCommit {
        LogCommit {
            seq: 42,
            ops: vec![(b"r\0Task\0a".to_vec(), Some(br#"{"v":1}"#.to_vec())), (b"e\0s\0x".to_vec(), None)],
            effects: vec![
                Effect::Topic("t".into()),
                Effect::Subscription("s".into()),
                Effect::SearchParameter { id: "p".into(), retired_url: Some("http://x/old".into()) },
                Effect::SearchParameter { id: "q".into(), retired_url: None },
            ],
            lanes: vec!["s".into(), "gone".into()],
        }
    }

    #[test]
    fn a_commit_round_trips() {
        let c = sample();
        assert_eq!(decode(&encode(&c)).unwrap(), c);
        let empty = LogCommit::default();
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused_without_panic() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "a record cut at {n} decoded");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(decode(&damaged).is_err(), "a record with byte {i} flipped decoded");
        }
        let mut longer = bytes.clone();
        longer.insert(bytes.len() - 4, 0);
        assert!(decode(&longer).is_err());
    }
}
