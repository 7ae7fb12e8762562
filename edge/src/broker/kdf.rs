//! Device passwords: new ones, their Argon2id hashes, and verification with reused memory.
//!
//! A device password is 128 random bits, so a stolen registry cannot be brute-forced whatever
//! the KDF costs; the KDF only has to keep the file from revealing the passwords. New hashes
//! therefore use 1 MiB and 2 passes ([`hasher`]) instead of Argon2's defaults (19 MiB): a
//! connection storm after an outage authenticates 1,000 devices in about a second. Hashes
//! written with other parameters still verify with their own.
//!
//! **Memory.** Each verification needs the hash's whole memory (1 MiB). Allocated and freed
//! per connection, those blocks fragment glibc's heap: a freed 1 MiB block raises malloc's
//! mmap threshold, later ones come from the thread's arena, and sessions' small allocations
//! settle in the holes. A thousand devices connecting held the edge at 88 MiB, 30 of it
//! theirs (BENCHMARKS.md, "Footprint"). So verifications borrow their blocks from a small
//! pool that keeps up to [`POOL`] buffers of at most [`POOL_BLOCKS`] KiB each.

use std::sync::{Mutex, PoisonError};

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngExt as _;

/// Buffers kept between verifications: as many as run at once (the gate runs a few).
const POOL: usize = 4;

/// The largest buffer kept, in 1 KiB blocks: [`hasher`]'s. A legacy 19 MiB hash borrows a
/// buffer of its own and gives it back to the system.
const POOL_BLOCKS: usize = 1024;

static BUFFERS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Argon2id with 1 MiB of memory and 2 passes, for 128-bit machine secrets (see the module
/// comment).
pub(super) fn hasher() -> Argon2<'static> {
    let params = Params::new(POOL_BLOCKS as u32, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A new password and its Argon2id PHC string.
pub(super) fn new_credentials() -> Result<(String, String), String> {
    let password = new_password();
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| e.to_string())?
        .to_string();
    Ok((password, hash))
}

/// 128 random bits, hex: a secret, not a memorable password, so brute force is hopeless even
/// without the KDF; the KDF protects the file.
fn new_password() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `pass` matches the PHC string `phc` (Argon2 only), compared in constant time.
pub(super) fn verify(pass: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let mut blocks = borrow(params.block_count());
    let hashed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(pass, salt, out, &mut blocks[..])
        .is_ok();
    give_back(blocks);
    // `Output`'s equality is constant-time.
    hashed && Output::new(out).is_ok_and(|computed| computed == expected)
}

/// A buffer of at least `n` blocks, from the pool if one fits.
fn borrow(n: usize) -> Vec<Block> {
    let pooled = BUFFERS.lock().unwrap_or_else(PoisonError::into_inner).pop();
    match pooled {
        Some(buffer) if buffer.len() >= n => buffer,
        other => {
            if let Some(small) = other {
                give_back(small);
            }
            vec![Block::default(); n]
        }
    }
}

/// Keeps `buffer` for the next verification, if it is not too large and the pool has room.
fn give_back(buffer: Vec<Block>) {
    if buffer.len() > POOL_BLOCKS {
        return;
    }
    let mut pool = BUFFERS.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOL {
        pool.push(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_hashes_and_refuses_everything_else() {
        let (password, phc) = new_credentials().unwrap();
        assert!(verify(password.as_bytes(), &phc));
        assert!(!verify(b"0123456789abcdef0123456789abcdef", &phc));
        assert!(!verify(password.as_bytes(), "not a phc string"));
        assert!(!verify(
            password.as_bytes(),
            "$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHQ"
        ));
        // Twice more: the pooled buffer must give the same answers.
        assert!(verify(password.as_bytes(), &phc));
        assert!(!verify(b"", &phc));
    }

    #[test]
    fn verifies_hashes_made_with_other_parameters() {
        // Argon2's defaults (19 MiB), as an older registry holds; argon2i and argon2d too.
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        for algorithm in [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d] {
            let phc = Argon2::new(algorithm, Version::V0x13, Params::default())
                .hash_password(b"legacy", &salt)
                .unwrap()
                .to_string();
            assert!(verify(b"legacy", &phc), "{phc}");
            assert!(!verify(b"legacy!", &phc), "{phc}");
        }
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x10,
            Params::new(64, 1, 1, Some(16)).unwrap(),
        )
        .hash_password(b"short", &salt)
        .unwrap()
        .to_string();
        assert!(verify(b"short", &small));
        assert!(!verify(b"Short", &small));
    }
}
