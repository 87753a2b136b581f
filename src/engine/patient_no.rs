//! Engine stage, patient numbers: `__kura_patient_no(pid)`, the patient's dense index in
//! the extract (`patient_index`) as a `UInt32`. The DP rewrite tags every row with it
//! instead of the 32-character pid, so the per-patient steps of contribution bounding
//! (the random row and group choices, the per-(patient, group) sums) group, partition and
//! sort 4-byte integers instead of strings. One pid maps to one number and back, so every
//! bound holds exactly as it did over the pid.
//!
//! Guarantees: a NULL pid stays NULL; a pid outside the index fails the query (internal
//! error, no value in the message); never registered in a session, so researcher SQL
//! cannot call it (the guard refuses the `__kura` prefix).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::contributors::missing_pid;
use super::patient_index::PatientIndex;

/// Name of the function.
pub const PATIENT_NO: &str = "__kura_patient_no";

/// `__kura_patient_no(pid)` over one extract's index.
#[derive(Debug, Clone)]
pub struct PatientNo {
    index: Arc<PatientIndex>,
    signature: Signature,
}

impl PartialEq for PatientNo {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.index, &other.index)
    }
}
impl Eq for PatientNo {}
impl Hash for PatientNo {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index.id.hash(state);
    }
}

impl PatientNo {
    /// `__kura_patient_no(pid)` as a logical expression.
    pub fn call(index: Arc<PatientIndex>, pid: Expr) -> Expr {
        Self::udf(index).call(vec![pid])
    }

    /// The function over `index`.
    pub fn udf(index: Arc<PatientIndex>) -> ScalarUDF {
        ScalarUDF::from(Self {
            index,
            signature: Signature::uniform(
                1,
                vec![DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8],
                Volatility::Immutable,
            ),
        })
    }

    /// The patient index it numbers patients by.
    pub fn index(&self) -> &Arc<PatientIndex> {
        &self.index
    }

    fn number<'a>(&self, pids: impl Iterator<Item = Option<&'a str>>) -> Result<UInt32Array> {
        // Rows of an extract come in pid order: look each pid up near the last one.
        let mut cursor = 0;
        pids.map(|p| {
            p.map(|p| {
                self.index
                    .get_near(p.as_bytes(), &mut cursor)
                    .ok_or_else(missing_pid)
            })
            .transpose()
        })
        .collect()
    }
}

impl ScalarUDFImpl for PatientNo {
    fn name(&self) -> &str {
        PATIENT_NO
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let a = &arrays[0];
        let out = match a.data_type() {
            DataType::Utf8 => self.number(a.as_string::<i32>().iter())?,
            DataType::LargeUtf8 => self.number(a.as_string::<i64>().iter())?,
            DataType::Utf8View => self.number(a.as_string_view().iter())?,
            other => {
                return Err(DataFusionError::Internal(format!(
                    "{PATIENT_NO} over a {other} column"
                )));
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn pids_become_their_index_nulls_stay_and_unknown_pids_fail_without_the_value() {
        let index = Arc::new(PatientIndex::from_pids("t", vec!["b".into(), "a".into()]).unwrap());
        let f = PatientNo {
            index,
            signature: Signature::any(1, Volatility::Immutable),
        };
        let pids = StringArray::from(vec![Some("b"), None, Some("a")]);
        let out = f.number(pids.iter()).unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(0)]);
        let e = f
            .number(StringArray::from(vec!["secret-pid"]).iter())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret-pid"), "{e}");
        assert!(out.is_valid(0));
    }
}
