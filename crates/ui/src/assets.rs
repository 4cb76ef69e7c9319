//! The page's files, embedded in the binary: nothing is fetched at run time.

/// The page: content type and text.
pub const INDEX: (&str, &str) = (
    "text/html; charset=utf-8",
    include_str!("assets/index.html"),
);

/// Other files by name: content type and text.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

/// The asset called `name`: its content type and text.
pub fn find(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|&(_, kind, body)| (kind, body))
}
