//! The library layers name an option as its configuration key in backticks (`calib_data`,
//! as a recipe writes it); on the command line the same option is a flag (`--calib-data`).
//! [`flag_words`] rewrites the one as the other. `main` words every command's errors this
//! way except `whittle pipeline`'s, whose options are recipe keys; a command that prints
//! the library's notes or warnings words them too.

/// Keys whose flag is not the key with dashes, the same in every command.
const RENAMED: [(&str, &str); 2] = [("shapes", "--shape"), ("features", "--feature")];

/// `text` with each option key in backticks written as a flag: `renames` (key, flag) for
/// the calling command's own differences, else [`RENAMED`], else `--` and the key with
/// dashes. Backticked text that is not a key (not only lowercase letters and `_`) stays.
pub(crate) fn flag_words(text: &str, renames: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let key = after
            .find('`')
            .map(|end| &after[..end])
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        out.push_str(&rest[..start]);
        match key {
            Some(key) => {
                let renamed = renames.iter().chain(&RENAMED).find(|(k, _)| *k == key);
                match renamed {
                    Some((_, flag)) => out.push_str(flag),
                    None => {
                        out.push_str("--");
                        out.push_str(&key.replace('_', "-"));
                    }
                }
                rest = &after[key.len() + 1..];
            }
            None => {
                out.push('`');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A library error (its message and causes) worded with the calling command's flags.
pub(crate) fn flag_error(e: impl std::fmt::Display, renames: &[(&str, &str)]) -> anyhow::Error {
    anyhow::anyhow!(flag_words(&e.to_string(), renames))
}

#[cfg(test)]
mod tests {
    use super::flag_words;

    #[test]
    fn option_keys_become_flags() {
        assert_eq!(
            flag_words("`accuracy_budget` needs `eval_data` SPEC; `x` y` kept", &[]),
            "--accuracy-budget needs --eval-data SPEC; --x y` kept"
        );
        assert_eq!(flag_words("no ` key `Here`", &[]), "no ` key `Here`");
    }

    #[test]
    fn renamed_keys_take_the_command_flag_first() {
        let text = "`shapes` x: `eval_samples` 0, `features` 2, `zoo:lenet`";
        assert_eq!(
            flag_words(text, &[("eval_samples", "--test-samples")]),
            "--shape x: --test-samples 0, --feature 2, `zoo:lenet`"
        );
        assert_eq!(
            flag_words(text, &[("shapes", "--input-shape")]),
            "--input-shape x: --eval-samples 0, --feature 2, `zoo:lenet`"
        );
    }
}
