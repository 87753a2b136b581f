//! Engine stage, Ballista: kura's own functions on the wire. The privacy rewrite puts
//! functions into the plan that DataFusion does not know — the contributor sets of
//! every released cell (`__kura_contributors`, `__kura_contributor_count`), facility
//! counts (`__kura_distinct_count`), DP patient numbers (`__kura_patient_no`), the
//! NULL-on-failure wrappers of error hardening (which keep the wrapped function's
//! name), the NULL-on-failure date arithmetic (`__kura_safe_date_plus`/`_minus`) and
//! the nullability marker of CASE. This codec writes each of them into the
//! serialized plan as a tagged description and rebuilds the very same function on the
//! scheduler and every executor; everything else goes to Ballista's own codecs.
//!
//! Guarantees: a kura function is never decoded as something else — a wrapper decoded
//! by name alone would lose its NULL-on-failure form, so every wrapper is encoded, and a
//! kura name without its description (or with one this build cannot read) fails the
//! query instead of running without it; the patient index a function needs is loaded
//! from the extract directory named in the plan only if that directory lies under the
//! process's `--extracts-dir`, and only if its contents match the hash in the plan
//! (`PatientIndex::load_cached`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};

use crate::engine::PatientIndex;
use crate::engine::contributors::{ContributorCount, Contributors};
use crate::engine::distinct_count::DistinctCount;
use crate::engine::keep_groups::{KeepGroups, KeepGroupsParts};
use crate::engine::keep_rows::{KeepRows, Output};
use crate::engine::patient_no::PatientNo;
use crate::sql::case_nullability::Nullable;
use crate::sql::safe_function::SafeFunction;
use crate::sql::safe_temporal::SafeTemporal;

/// Prefix of every kura function description (a format version).
const MAGIC: &[u8] = b"kura-fn-1:";

/// Where a patient index lives: the extract directory and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexRef {
    dir: PathBuf,
    extract_id: String,
    sha256: String,
}

/// A kura function as the plan carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "function", rename_all = "snake_case")]
enum Wire {
    Contributors {
        index: IndexRef,
    },
    PatientNo {
        index: IndexRef,
    },
    ContributorCount,
    DistinctCount,
    /// The choice of `limit` rows per patient and group, added up (DP bounding, P1–P2).
    KeepRows {
        limit: u32,
        values: usize,
        outputs: Vec<Output>,
    },
    /// The choice of `limit` groups per patient (DP bounding, P3).
    KeepGroups(KeepGroupsParts),
    Nullable,
    /// NULL-on-failure date/time `+` (`plus`) or `-`.
    SafeTemporal {
        plus: bool,
    },
    /// A NULL-on-failure wrapper of the DataFusion function `inner`.
    Safe {
        inner: String,
    },
}

/// kura's functions, for both the logical and the physical plan.
#[derive(Debug, Clone)]
pub struct Functions {
    /// Canonical root under which extract directories may be named.
    extracts: PathBuf,
}

fn refused(what: String) -> DataFusionError {
    DataFusionError::Plan(format!("kura codec: {what}"))
}

/// DataFusion's own scalar functions by name (what a wrapper wraps).
fn builtins() -> &'static HashMap<String, Arc<ScalarUDF>> {
    static FUNCTIONS: OnceLock<HashMap<String, Arc<ScalarUDF>>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        SessionStateBuilder::new()
            .with_default_features()
            .build()
            .scalar_functions()
            .clone()
    })
}

fn index_ref(index: &PatientIndex) -> Result<IndexRef> {
    let (dir, sha256) = index.source().ok_or_else(|| {
        refused("a patient index not loaded from an extract cannot be sent to Ballista".into())
    })?;
    // Absolute, so that a node started in another working directory finds the same files.
    let dir = dir
        .canonicalize()
        .map_err(|e| refused(format!("extract of index {}: {e}", index.id)))?;
    Ok(IndexRef {
        dir,
        extract_id: index.id.clone(),
        sha256: sha256.to_string(),
    })
}

fn write(wire: &Wire, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(MAGIC);
    serde_json::to_writer(buf, wire).map_err(|e| refused(e.to_string()))
}

impl Functions {
    /// Functions whose indexes are read from under `extracts` only.
    pub fn new(extracts: &Path) -> Result<Self> {
        let extracts = extracts.canonicalize().map_err(|e| {
            refused(format!(
                "extracts directory {} is not readable: {e}",
                extracts.display()
            ))
        })?;
        Ok(Self { extracts })
    }

    /// The description of a kura function, if `buf` holds one.
    fn read(&self, name: &str, buf: &[u8]) -> Result<Option<Wire>> {
        let Some(body) = buf.strip_prefix(MAGIC) else {
            if name.starts_with("__kura") {
                return Err(refused(format!("`{name}` arrived without its description")));
            }
            return Ok(None);
        };
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| refused(format!("`{name}`: unreadable description ({e})")))
    }

    fn index(&self, r: &IndexRef) -> Result<Arc<PatientIndex>> {
        let dir = r.dir.canonicalize().map_err(|e| {
            refused(format!(
                "extract {} is not readable here: {e}",
                r.extract_id
            ))
        })?;
        if !dir.starts_with(&self.extracts) {
            return Err(refused(format!(
                "extract directory {} is outside --extracts-dir {}",
                dir.display(),
                self.extracts.display()
            )));
        }
        PatientIndex::load_cached(&dir, &r.extract_id, &r.sha256)
            .map_err(|e| refused(format!("patient index of {}: {e}", r.extract_id)))
    }

    fn encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> Result<bool> {
        let inner = udf.inner().as_ref();
        let wire = if let Some(s) = inner.downcast_ref::<SafeFunction>() {
            Wire::Safe {
                inner: s.inner().name().to_string(),
            }
        } else if let Some(p) = inner.downcast_ref::<PatientNo>() {
            Wire::PatientNo {
                index: index_ref(p.index())?,
            }
        } else if inner.downcast_ref::<ContributorCount>().is_some() {
            Wire::ContributorCount
        } else if inner.downcast_ref::<Nullable>().is_some() {
            Wire::Nullable
        } else if let Some(t) = inner.downcast_ref::<SafeTemporal>() {
            Wire::SafeTemporal { plus: t.is_plus() }
        } else {
            return Ok(false);
        };
        write(&wire, buf)?;
        Ok(true)
    }

    fn decode_udf(&self, name: &str, buf: &[u8]) -> Result<Option<Arc<ScalarUDF>>> {
        let udf = match self.read(name, buf)? {
            None => return Ok(None),
            Some(Wire::Safe { inner }) => {
                let f = builtins()
                    .get(&inner)
                    .ok_or_else(|| refused(format!("no function `{inner}` to wrap")))?;
                SafeFunction::wrap(f.clone())
            }
            Some(Wire::PatientNo { index }) => PatientNo::udf(self.index(&index)?),
            Some(Wire::ContributorCount) => ScalarUDF::from(ContributorCount::default()),
            Some(Wire::Nullable) => Nullable::udf(),
            Some(Wire::SafeTemporal { plus }) => SafeTemporal::udf(plus),
            Some(other) => {
                return Err(refused(format!(
                    "`{name}` is not a scalar function ({other:?})"
                )));
            }
        };
        Ok(Some(Arc::new(udf)))
    }

    fn encode_udaf(&self, udaf: &AggregateUDF, buf: &mut Vec<u8>) -> Result<bool> {
        let inner = udaf.inner().as_ref();
        let wire = if let Some(c) = inner.downcast_ref::<Contributors>() {
            Wire::Contributors {
                index: index_ref(c.index())?,
            }
        } else if inner.downcast_ref::<DistinctCount>().is_some() {
            Wire::DistinctCount
        } else if let Some(k) = inner.downcast_ref::<KeepRows>() {
            let (limit, values, outputs) = k.parts();
            Wire::KeepRows {
                limit,
                values,
                outputs: outputs.to_vec(),
            }
        } else if let Some(k) = inner.downcast_ref::<KeepGroups>() {
            Wire::KeepGroups(k.parts())
        } else {
            return Ok(false);
        };
        write(&wire, buf)?;
        Ok(true)
    }

    fn decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Option<Arc<AggregateUDF>>> {
        let udaf = match self.read(name, buf)? {
            None => return Ok(None),
            Some(Wire::Contributors { index }) => Contributors::udaf(self.index(&index)?),
            Some(Wire::DistinctCount) => Arc::new(DistinctCount::udaf()),
            Some(Wire::KeepRows {
                limit,
                values,
                outputs,
            }) => Arc::new(KeepRows::udaf(limit, values, outputs)),
            Some(Wire::KeepGroups(parts)) => Arc::new(KeepGroups::udaf(parts)),
            Some(other) => {
                return Err(refused(format!("`{name}` is not an aggregate ({other:?})")));
            }
        };
        Ok(Some(udaf))
    }
}

/// The logical codec: kura's functions, then Ballista's.
#[derive(Debug)]
pub struct LogicalCodec {
    functions: Functions,
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalCodec {
    pub fn new(functions: Functions) -> Self {
        Self {
            functions,
            ballista: BallistaLogicalExtensionCodec::default(),
        }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match self.functions.decode_udf(name, buf)? {
            Some(f) => Ok(f),
            None => self.ballista.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if self.functions.encode_udf(node, buf)? {
            return Ok(());
        }
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        match self.functions.decode_udaf(name, buf)? {
            Some(f) => Ok(f),
            None => self.ballista.try_decode_udaf(name, buf),
        }
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if self.functions.encode_udaf(node, buf)? {
            return Ok(());
        }
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

/// The physical codec: kura's functions, then Ballista's.
#[derive(Debug)]
pub struct PhysicalCodec {
    functions: Functions,
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalCodec {
    pub fn new(functions: Functions) -> Self {
        Self {
            functions,
            ballista: BallistaPhysicalExtensionCodec::default(),
        }
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match self.functions.decode_udf(name, buf)? {
            Some(f) => Ok(f),
            None => self.ballista.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if self.functions.encode_udf(node, buf)? {
            return Ok(());
        }
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        match self.functions.decode_udaf(name, buf)? {
            Some(f) => Ok(f),
            None => self.ballista.try_decode_udaf(name, buf),
        }
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if self.functions.encode_udaf(node, buf)? {
            return Ok(());
        }
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::patient_index::PATIENT_INDEX_FILE;

    /// A patient index written into `dir` as an extract holds it, loaded from there.
    fn index_in(dir: &Path, id: &str) -> Arc<PatientIndex> {
        std::fs::create_dir_all(dir).unwrap();
        let text = PatientIndex::file_text(vec!["p1".into(), "p2".into()]);
        std::fs::write(dir.join(PATIENT_INDEX_FILE), &text).unwrap();
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()));
        PatientIndex::load_cached(dir, id, &sha).unwrap()
    }

    fn codec(root: &Path) -> LogicalCodec {
        LogicalCodec::new(Functions::new(root).unwrap())
    }

    #[test]
    fn kura_functions_are_rebuilt_as_themselves() {
        let root = tempfile::tempdir().unwrap();
        let index = index_in(&root.path().join("A-1").join("e1"), "e1");
        let codec = codec(root.path());
        let udaf = Contributors::udaf(index.clone());
        let mut buf = Vec::new();
        codec.try_encode_udaf(&udaf, &mut buf).unwrap();
        let back = codec.try_decode_udaf(udaf.name(), &buf).unwrap();
        let c = back
            .inner()
            .as_ref()
            .downcast_ref::<Contributors>()
            .unwrap();
        assert!(
            Arc::ptr_eq(c.index(), &index),
            "the same index, loaded once"
        );
        // A NULL-on-failure wrapper carries the wrapped function's name; it comes back as
        // the wrapper, not as the bare function of that name.
        let safe = SafeFunction::wrap(builtins()["to_date"].clone());
        let mut buf = Vec::new();
        codec.try_encode_udf(&safe, &mut buf).unwrap();
        assert_eq!(safe.name(), "to_date");
        let back = codec.try_decode_udf("to_date", &buf).unwrap();
        assert!(crate::sql::safe_function::is_safe(&back));
        for (udf, plus) in [
            (SafeTemporal::udf(true), true),
            (SafeTemporal::udf(false), false),
        ] {
            let mut buf = Vec::new();
            codec.try_encode_udf(&udf, &mut buf).unwrap();
            let back = codec.try_decode_udf(udf.name(), &buf).unwrap();
            let t = back
                .inner()
                .as_ref()
                .downcast_ref::<SafeTemporal>()
                .unwrap();
            assert_eq!(t.is_plus(), plus);
        }
        // The group choice keeps its bound, fields and seed (the seed makes every node
        // choose the same pairs for a patient).
        let parts = KeepGroupsParts {
            limit: 3,
            names: vec!["__kura_g0".into(), "__kura_c0".into()],
            keys: 1,
            adds: vec![crate::engine::keep_groups::Add::CountNonNull],
            seed: 42,
        };
        let keep = KeepGroups::udaf(parts.clone());
        let mut buf = Vec::new();
        codec.try_encode_udaf(&keep, &mut buf).unwrap();
        let back = codec.try_decode_udaf(keep.name(), &buf).unwrap();
        let k = back.inner().as_ref().downcast_ref::<KeepGroups>().unwrap();
        assert_eq!(k.parts(), parts);
        let outputs = vec![Output {
            value: 0,
            add: crate::engine::keep_groups::Add::Sum,
            name: "__kura_s0".into(),
        }];
        let keep = KeepRows::udaf(3, 1, outputs.clone());
        let mut buf = Vec::new();
        codec.try_encode_udaf(&keep, &mut buf).unwrap();
        let back = codec.try_decode_udaf(keep.name(), &buf).unwrap();
        let k = back.inner().as_ref().downcast_ref::<KeepRows>().unwrap();
        assert_eq!(k.parts(), (3, 1, &outputs[..]));
        // DataFusion's own functions are left to the default (by name) path.
        let mut buf = Vec::new();
        codec.try_encode_udf(&builtins()["abs"], &mut buf).unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    fn attack_a_kura_function_without_its_description_or_outside_the_extracts_fails() {
        let root = tempfile::tempdir().unwrap();
        let codec = codec(root.path());
        for name in [
            "__kura_contributors",
            "__kura_patient_no",
            "__kura_distinct_count",
        ] {
            let e = codec.try_decode_udaf(name, &[]).map(|_| ()).unwrap_err();
            assert!(e.to_string().contains("without its description"), "{e}");
        }
        let e = codec
            .try_decode_udf("__kura_safe_date_plus", b"junk")
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("without its description"), "{e}");
        // An index outside the node's extracts directory is never read.
        let elsewhere = tempfile::tempdir().unwrap();
        let index = index_in(&elsewhere.path().join("e2"), "e2");
        let udf = PatientNo::udf(index);
        let mut buf = Vec::new();
        codec.try_encode_udf(&udf, &mut buf).unwrap();
        let e = codec
            .try_decode_udf(udf.name(), &buf)
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        // A description of another kind than the call is refused too.
        let mut buf = Vec::new();
        codec.try_encode_udf(&Nullable::udf(), &mut buf).unwrap();
        assert!(codec.try_decode_udaf("nullable", &buf).is_err());
    }
}
