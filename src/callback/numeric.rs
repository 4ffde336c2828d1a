//! PostgreSQL's `numeric`, which `jsonb` stores every number as, has bounds that JSON lacks.

/// Most digits after the decimal point (`NUMERIC_DSCALE_MAX`).
const MAX_SCALE: i64 = 16_383;
/// Most digits before it: a base-10000 weight of at most 32767.
const MAX_INTEGER_DIGITS: i64 = 131_072;
/// PostgreSQL refuses exponents of this magnitude before anything else.
const MAX_EXPONENT: i64 = i32::MAX as i64 / 2;

/// Whether PostgreSQL accepts this JSON number text (`-?int(.frac)?([eE][+-]?exp)?`).
pub fn fits(text: &str) -> bool {
    let text = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, "0"),
    };
    let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
    // Longer than i64 means far past MAX_EXPONENT either way.
    let Ok(exponent) = exponent.parse::<i64>() else {
        return false;
    };
    if exponent.abs() >= MAX_EXPONENT {
        return false;
    }
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let scale = (fraction.len() as i64 - exponent).max(0);
    if scale > MAX_SCALE {
        return false;
    }
    // Position of the leading non-zero digit, as a power of ten.
    let leading = match integer.trim_start_matches('0') {
        "" => match fraction.find(|c| c != '0') {
            Some(at) => -(at as i64) - 1,
            None => return true, // zero: only the scale matters
        },
        digits => digits.len() as i64 - 1,
    };
    leading + exponent < MAX_INTEGER_DIGITS
}
