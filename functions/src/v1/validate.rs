//! Domain rules for what users type: usernames, emails, passwords, names.

use super::envelope::{ApiError, Code};

pub fn username(s: &str) -> Result<(), ApiError> {
    let ok = (3..=32).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            Code::Validation002,
            "username",
            "username must be 3 to 32 letters, digits, '_', '.' or '-'",
        )
        .unprocessable())
    }
}

pub fn email(s: &str) -> Result<(), ApiError> {
    let ok = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(Code::Validation002, "email", "email is not a valid address").unprocessable())
    }
}

/// At least 10 characters, at most 128, three of four character classes, and not containing
/// the username or the email's local part.
pub fn password(p: &str, personal: &[&str]) -> Result<(), ApiError> {
    let weak = |why: &str| {
        Err(ApiError::field(
            Code::Validation003,
            "password",
            format!("password is too weak: {why}"),
        ))
    };
    let n = p.chars().count();
    if n < 10 {
        return weak("use at least 10 characters");
    }
    if n > 128 {
        return Err(ApiError::field(
            Code::Validation003,
            "password",
            "password is longer than 128 characters",
        ));
    }
    let classes = [
        p.chars().any(|c| c.is_lowercase()),
        p.chars().any(|c| c.is_uppercase()),
        p.chars().any(|c| c.is_ascii_digit()),
        p.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|c| **c).count() < 3 {
        return weak("mix at least three of lowercase, uppercase, digits and symbols");
    }
    let lower = p.to_lowercase();
    for word in personal {
        let word = word.split('@').next().unwrap_or_default().to_lowercase();
        if word.len() >= 3 && lower.contains(&word) {
            return weak("do not include your username or email");
        }
    }
    Ok(())
}

/// A free-text field of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

/// Whether `id` could name a record: ids are at most 64 printable characters. A caller's
/// id that could not is answered as missing (404), like any other unknown id.
pub fn could_be_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.chars().any(char::is_control)
}

/// A value of at most `max` characters (a filter, matched as given).
pub fn at_most(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// A required name: trimmed, 1 to `max` printable characters.
pub fn name(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::field(
            Code::Validation001,
            field,
            format!("{field} is required"),
        ));
    }
    text(field, value, max)?;
    Ok(value.trim().to_string())
}

/// Free text that may span lines: at most `max` characters, no other control characters.
pub fn prose(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let control = value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'));
    if value.chars().count() > max || control {
        return Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

/// A value from a fixed set.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(ApiError::field(
        Code::Validation003,
        field,
        format!("{field} must be one of {}", allowed.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_with_the_reason() {
        assert!(password("Str0ng-enough!", &["alice"]).is_ok());
        for weak in ["short1A!", "alllowercaseletters", "Alice-Passw0rd", &"Aa1!".repeat(40)] {
            let e = password(weak, &["alice", "alice@example.com"]).unwrap_err();
            assert_eq!(e.details[0].field, "password", "{weak}");
        }
    }

    #[test]
    fn usernames_and_emails_are_checked() {
        assert!(username("john_doe").is_ok() && username("jo").is_err() && username("a b c").is_err());
        assert!(
            email("a@b.co").is_ok() && email("a@b").is_err() && email("a b@c.d").is_err() && email("@b.c").is_err()
        );
    }
}
