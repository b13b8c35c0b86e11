//! Building keys from user-supplied parts without letting one key forge another.

/// Escapes a user-supplied key part: `%` and `#` (the separator) and NUL (the embedded store's
/// separator) are percent-encoded, so `a#b` as a name can never collide with app `a`, name `b`.
pub fn part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::part;

    #[test]
    fn separators_in_user_parts_cannot_forge_keys() {
        let a = format!("{}#{}", part("app#x"), part("y"));
        let b = format!("{}#{}", part("app"), part("x#y"));
        assert_ne!(a, b);
        assert_eq!(part("plain-name_1"), "plain-name_1");
        assert_eq!(part("%#\0"), "%25%23%00");
    }
}
