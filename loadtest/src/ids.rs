//! Ids as docs/protocol.md defines them: 1 to 64 characters of `A-Z a-z 0-9 _ - . :`.

pub fn valid(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

pub fn check(what: &str, s: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid(s),
        "{what} `{s}` is not an id (1 to 64 of A-Z a-z 0-9 _ - . :)"
    );
    Ok(())
}
