//! "Did you mean" suggestions: the known name nearest to a misspelt one, for errors about
//! unknown fields, attributes, types, references and parameters.
//!
//! Similarity is Jaro-Winkler (`strsim`), which rewards a shared prefix and tolerates
//! transpositions (`bsae` → `base`, `maxmemroy` → `maxmemory`), with a threshold high
//! enough that unrelated short names are not suggested.

/// Below this Jaro-Winkler similarity a candidate is not suggested: at 0.8 `trigers` →
/// `triggers` and `nul_resource` → `null_resource` are found, `id` → `ip` is not.
const THRESHOLD: f64 = 0.8;

/// The candidate nearest to `name`, if any is near enough. Case-insensitive equality wins
/// outright; ties go to the lexicographically smallest candidate, so the answer does not
/// depend on the order candidates come in. `name` itself is never suggested.
#[must_use]
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = name.to_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let score = if c.to_lowercase() == lower {
            // Above any Jaro-Winkler score: only a different case.
            2.0
        } else {
            strsim::jaro_winkler(&lower, &c.to_lowercase())
        };
        if score < THRESHOLD {
            continue;
        }
        let better = match best {
            None => true,
            Some((s, b)) => score > s || (score == s && c < b),
        };
        if better {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean "X"? ` (with the trailing space) when a candidate is near `name`, else
/// the empty string: for messages that go on with the full list of what was expected.
#[must_use]
pub fn hint<'a, I>(name: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    did_you_mean(name, candidates)
        .map(|c| format!("did you mean \"{c}\"? "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_nearest_misspelling() {
        let attrs = ["triggers", "inputs", "outputs"];
        assert_eq!(did_you_mean("trigers", attrs), Some("triggers"));
        assert_eq!(did_you_mean("inptus", attrs), Some("inputs"));
        assert_eq!(
            did_you_mean("maxmemroy", ["instances", "maxmemory", "vm_type"]),
            Some("maxmemory")
        );
        assert_eq!(
            did_you_mean(
                "null_resource.bsae",
                ["null_resource.base", "null_resource.app"]
            ),
            Some("null_resource.base")
        );
        assert_eq!(
            did_you_mean(
                "nul_resource",
                ["bosh_deployment", "null_resource", "vault_secret"]
            ),
            Some("null_resource")
        );
    }

    #[test]
    fn suggests_nothing_for_unrelated_names() {
        assert_eq!(did_you_mean("size", ["id", "service", "plan"]), None);
        assert_eq!(did_you_mean("id", ["ip"]), None);
        assert_eq!(did_you_mean("anything", std::iter::empty()), None);
        assert_eq!(hint("zzz", ["triggers"]), "");
    }

    #[test]
    fn case_only_differences_win_and_the_name_itself_is_skipped() {
        assert_eq!(
            did_you_mean("Triggers", ["triggerz", "triggers"]),
            Some("triggers")
        );
        assert_eq!(did_you_mean("base", ["base"]), None);
        assert_eq!(
            hint("atributes", ["attributes"]),
            "did you mean \"attributes\"? "
        );
    }

    #[test]
    fn ties_do_not_depend_on_candidate_order() {
        assert_eq!(did_you_mean("abcd", ["abce", "abcf"]), Some("abce"));
        assert_eq!(did_you_mean("abcd", ["abcf", "abce"]), Some("abce"));
    }
}
