//! What an app developer's model name stands for at this network, and the coefficient a quote
//! prices it at: the policy behind `cocoon quote` (which prints it).
//!
//! A name is a model type the root lists ("qwen3"), any prefix that names one type ("Qwen"), or
//! a served model's own name. The price is the cheapest live worker's coefficient within the
//! app's limit; with no worker serving the model, the base coefficient.

/// Why a name or a limit cannot be quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The name is empty.
    #[error("--model is empty; name a model type the root lists")]
    EmptyName,
    /// Several types start with the name.
    #[error("model {asked:?} is ambiguous: the root lists {types}; name one")]
    Ambiguous {
        /// The name, lowercased.
        asked: String,
        /// The types it could mean.
        types: String,
    },
    /// Neither a type nor a served model.
    #[error("unknown model {asked:?}; the root knows: {known}")]
    Unknown {
        /// The name as given.
        asked: String,
        /// The root's types.
        known: String,
    },
    /// Workers serve it, all dearer than the limit.
    #[error("no worker for {model} at max coefficient {max}; the cheapest costs {cheapest}")]
    TooExpensive {
        /// The model as shown.
        model: String,
        /// The app's limit.
        max: u32,
        /// The cheapest worker's coefficient.
        cheapest: u32,
    },
}

/// The base coefficient (thousandths): the root's price as it stands.
pub const BASE_COEFFICIENT: u32 = 1000;

/// The root's model types, sorted, once each, for messages.
pub fn known_list(types: &[String]) -> String {
    let mut known: Vec<&str> = types.iter().map(String::as_str).collect();
    known.sort_unstable();
    known.dedup();
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

/// The root's type (lowercase `types`) that `asked` names: the type itself in any case, else
/// the one type that starts with it ("Qwen" → "qwen3"). `None` when no type matches (the name
/// may still be a served model's name); an error when several start with it.
pub fn type_named(asked: &str, types: &[String]) -> Result<Option<String>, QuoteError> {
    let asked = asked.trim().to_lowercase();
    if asked.is_empty() {
        return Err(QuoteError::EmptyName);
    }
    if types.contains(&asked) {
        return Ok(Some(asked));
    }
    let mut starting: Vec<&String> = types.iter().filter(|t| t.starts_with(&asked)).collect();
    starting.sort_unstable();
    starting.dedup();
    match starting.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        several => Err(QuoteError::Ambiguous {
            asked,
            types: several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The coefficient a quote uses, and where it came from (for the reader): the cheapest of the
/// live `coefficients` within `max` (none: any), else the base coefficient when nobody serves
/// `model` (never above `max`); an error when workers serve it, all dearer than `max`.
pub fn choose_coefficient(
    model: &str,
    coefficients: &[u32],
    max: Option<u32>,
) -> Result<(u32, String), QuoteError> {
    let cheapest = coefficients.iter().copied().min();
    let affordable = coefficients
        .iter()
        .copied()
        .filter(|c| max.is_none_or(|m| *c <= m))
        .min();
    match (affordable, cheapest) {
        (Some(c), _) => Ok((
            c,
            format!("cheapest of {} live worker(s)", coefficients.len()),
        )),
        (None, Some(cheapest)) => Err(QuoteError::TooExpensive {
            model: model.to_string(),
            max: max.unwrap_or(0),
            cheapest,
        }),
        (None, None) => Ok((
            max.unwrap_or(BASE_COEFFICIENT).min(BASE_COEFFICIENT),
            format!("no worker serves {model} now: the base coefficient"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_name_stands_for_the_one_type_that_starts_with_it() {
        let types: Vec<String> = ["smollm2", "qwen3", "qwen3", "deepseek-r1", "deepseek-v3"]
            .map(String::from)
            .to_vec();
        let named = |s: &str| type_named(s, &types).map_err(|e| e.to_string());
        assert_eq!(named("qwen3").unwrap().as_deref(), Some("qwen3"));
        assert_eq!(named("Qwen").unwrap().as_deref(), Some("qwen3"));
        assert_eq!(named("SMOLLM2").unwrap().as_deref(), Some("smollm2"));
        assert_eq!(named("llama").unwrap(), None);
        assert_eq!(
            named("deepseek").unwrap_err(),
            "model \"deepseek\" is ambiguous: the root lists deepseek-r1, deepseek-v3; name one"
        );
        assert_eq!(
            known_list(&types),
            "deepseek-r1, deepseek-v3, qwen3, smollm2"
        );
        assert_eq!(known_list(&[]), "none");
        assert!(named(" ").unwrap_err().contains("--model is empty"));
    }

    #[test]
    fn the_cheapest_affordable_worker_prices_it_else_the_base() {
        let live = [1500, 900, 1200];
        assert_eq!(choose_coefficient("m", &live, None).unwrap().0, 900);
        assert_eq!(
            choose_coefficient("m", &live, Some(1000)).unwrap(),
            (900, "cheapest of 3 live worker(s)".into())
        );
        // Exactly at the limit is affordable; one below it is not.
        assert_eq!(choose_coefficient("m", &live, Some(900)).unwrap().0, 900);
        assert_eq!(
            choose_coefficient("m", &live, Some(899))
                .unwrap_err()
                .to_string(),
            "no worker for m at max coefficient 899; the cheapest costs 900"
        );
        // Nobody serves it: the base, or the app's lower limit.
        assert_eq!(
            choose_coefficient("m", &[], None).unwrap(),
            (1000, "no worker serves m now: the base coefficient".into())
        );
        assert_eq!(choose_coefficient("m", &[], Some(700)).unwrap().0, 700);
        assert_eq!(choose_coefficient("m", &[], Some(0)).unwrap().0, 0);
    }
}
