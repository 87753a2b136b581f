//! SQL stage 1, error hardening: string functions whose output could grow without bound
//! get a NULL argument instead.
//!
//! `repeat(s, n)`, `lpad(s, n, …)`, `rpad(s, n, …)` and `replace(s, from, to)` are the only
//! allow-listed functions whose output can be much longer than their inputs. DataFusion
//! allocates their results outside the memory pool, so `repeat(sex, birth_year * 1000000)`
//! aborts the whole process on a failed allocation — a data value deciding between an
//! answer and a dead server. Each is rewritten so that a call whose result would exceed
//! [`MAX_STRING_BYTES`] bytes (bounded from the arguments of that row only) gets a NULL
//! count or input, hence a NULL result: `repeat(s, CASE WHEN n <= cap / max(len(s), 1)
//! THEN n END)`. Every other string function's output is at most the sum of its inputs,
//! so string values stay within the cap times the (bounded) number of expression nodes.

use datafusion::functions::expr_fn::{greatest, octet_length};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, lit, when};

/// The longest string value (in bytes) a capped function may produce.
pub const MAX_STRING_BYTES: i64 = 10_000;

/// `f` with its growing argument capped, or unchanged if `f` is not one of the four.
pub fn capped(mut f: ScalarFunction) -> ScalarFunction {
    let name = f.func.name().to_ascii_lowercase();
    match (name.as_str(), f.args.len()) {
        ("repeat", 2) => {
            // len(s) * n ≤ cap, without a product that could overflow.
            let per =
                lit(MAX_STRING_BYTES) / greatest(vec![octet_length(f.args[0].clone()), lit(1)]);
            f.args[1] = only_if(f.args[1].clone().lt_eq(per), f.args[1].clone());
        }
        ("lpad" | "rpad", 2 | 3) => {
            // The result has n characters, each at most 4 bytes.
            let n = f.args[1].clone();
            f.args[1] = only_if(n.clone().lt_eq(lit(MAX_STRING_BYTES / 4)), n);
        }
        ("replace", 3) => {
            // At most len(s) * max(len(to), 1) bytes.
            let s = f.args[0].clone();
            let per =
                lit(MAX_STRING_BYTES) / greatest(vec![octet_length(f.args[2].clone()), lit(1)]);
            f.args[0] = only_if(octet_length(s.clone()).lt_eq(per), s);
        }
        _ => {}
    }
    f
}

/// `CASE WHEN cond THEN value END`: NULL where `cond` does not hold.
fn only_if(cond: Expr, value: Expr) -> Expr {
    when(cond, value.clone()).end().unwrap_or(value)
}
