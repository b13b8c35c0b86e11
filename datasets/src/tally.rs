//! A reader that counts and hashes what passes through it.

use std::io::Read;

use sha2::{Digest, Sha256};

pub struct Tally<R> {
    inner: R,
    bytes: u64,
    hasher: Sha256,
}

impl<R: Read> Tally<R> {
    pub fn new(inner: R) -> Self {
        Tally {
            inner,
            bytes: 0,
            hasher: Sha256::new(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads what is left (a reader may stop early), then returns the size and hex sha256.
    pub fn finish(mut self) -> std::io::Result<(u64, String)> {
        std::io::copy(&mut self.inner, &mut Sink(&mut self.hasher, &mut self.bytes))?;
        let digest = self.hasher.finalize();
        Ok((self.bytes, digest.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

struct Sink<'a>(&'a mut Sha256, &'a mut u64);

impl std::io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        *self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
