//! Text typed by people (a silence's reason, a token's subject) that the hub stores, audits
//! and shows to others must read as what it is: no control characters (NUL, ANSI escape
//! sequences start with one, C1 controls) and no invisible format characters (bidirectional
//! overrides such as U+202E turn `txt.exe` into `exe.txt` on screen; zero-width characters
//! make two names look alike).

/// Characters that change how text reads without showing (Unicode format characters: soft
/// hyphen, zero-width spaces and joiners, bidirectional overrides and isolates, the byte order
/// mark, interlinear annotations).
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Whether `s` holds neither control nor invisible characters.
pub fn is_plain(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() || invisible(c))
}

/// `s` with every control or invisible character replaced by U+FFFD, for text that arrives
/// already applied elsewhere (an edge's record) and can no longer be refused.
pub fn cleaned(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || invisible(c) {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_escapes_and_overrides_are_not_plain() {
        assert!(is_plain("turning the patient — 5 min, 37 °C"));
        for bad in [
            "a\0b",
            "red \u{1b}[31malert\u{1b}[0m",
            "line\nbreak",
            "\u{202e}txt.exe",
            "zero\u{200b}width",
            "c1 \u{85} next line",
        ] {
            assert!(!is_plain(bad), "{bad:?}");
            assert!(is_plain(&cleaned(bad)), "{bad:?}");
        }
        assert_eq!(cleaned("a\u{202e}b"), "a\u{fffd}b");
    }
}
