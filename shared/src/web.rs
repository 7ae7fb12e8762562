//! The ward dashboard: one HTML page, a script and a stylesheet, embedded in both binaries (no
//! front-end toolchain to build or run). The hub serves it on its HTTP listener, an edge on its
//! ward view; both with [`CSP`] (scripts and styles from the serving host only; connections to
//! the host's own HTTP and WebSocket) and without a referrer, since a token may arrive once in
//! the page's URL.

/// The page.
pub const INDEX: &str = include_str!("../web/index.html");
/// Its script.
pub const SCRIPT: &str = include_str!("../web/app.js");
/// Its stylesheet.
pub const STYLE: &str = include_str!("../web/app.css");

/// The Content Security Policy every asset is served with.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";

/// The page as an edge's ward view serves it: it names the edge and its ward (a `meta`
/// element the script reads), so the page knows it is the ward view and which ward it shows.
pub fn ward_view_index(edge: &str, ward: &str) -> String {
    let escape = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect::<String>()
    };
    let meta = format!(
        "<meta name=\"wardlink-view\" content=\"ward\" data-edge=\"{}\" data-ward=\"{}\">\n",
        escape(edge),
        escape(ward)
    );
    INDEX.replacen("</head>", &format!("{meta}</head>"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ward_view_page_names_its_edge_and_ward_and_nothing_else() {
        let page = ward_view_index("edge-a", "ward\"><script>x</script>");
        assert!(page.contains(r#"data-edge="edge-a" data-ward="wardscriptxscript""#));
        assert_eq!(
            page.matches("<script").count(),
            INDEX.matches("<script").count()
        );
    }
}
