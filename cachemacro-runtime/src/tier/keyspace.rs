//! The keys each function renders on one shared tier, so that two functions that could
//! read and overwrite each other's values are found and reported.

use std::sync::Mutex;

/// A key template and what its values escape besides the fixed set.
type Template = (&'static str, &'static [u8]);

/// The key templates of the functions on one tier.
#[derive(Default)]
pub(crate) struct Keyspace {
    /// ((template, escape set), `name` option, name in stats)
    claimed: Mutex<Vec<(Template, Option<&'static str>, String)>>,
    conflicts: Mutex<Vec<String>>,
}

impl Keyspace {
    /// Records that a function keys its values with `template` on tier `tier`. If another
    /// function's template can render the same keys (and the two do not share a `name` on
    /// purpose), they would read and overwrite each other's values: say so loudly, in the
    /// log and in `health()`.
    pub fn claim(&self, tier: &str, template: Template, name: Option<&'static str>, shown: String) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        for (other, other_name, other_shown) in claimed.iter() {
            if name.is_some() && name == *other_name {
                continue; // the same `name`: sharing entries is the point
            }
            if crate::key::templates_overlap(*other, template) {
                let conflict = format!(
                    "`{shown}` (key \"{}\") and `{other_shown}` (key \"{}\") can render the same keys on backend `{tier}`, so they would read and overwrite each other's values: give one of them a distinct key, or both the same `name = \"…\"` if they are meant to share entries",
                    template.0, other.0
                );
                tracing::error!("cachemacro: {conflict}");
                self.conflicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conflict);
            }
        }
        claimed.push((template, name, shown));
    }

    /// Every collision found so far.
    pub fn conflicts(&self) -> Vec<String> {
        self.conflicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
