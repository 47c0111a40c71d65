//! How tally's own plan nodes and functions travel to the Ballista scheduler and executors.
//!
//! Ballista sends physical plans as protobuf; nodes it does not know go through an extension
//! codec. [`TallyCodec`] writes tally's input scan ([`InputScanExec`]) as its [`ReadSpec`] in
//! JSON after a magic prefix (its input, the work list naming the files, is a memory source that
//! protobuf carries), and names `newest_sum` so it is rebuilt from this binary rather than looked
//! up in a registry; everything else is Ballista's own codec's.
//! Protobuf never starts with the prefix's first byte (`T` would be field 10 with the deprecated
//! end-group wire type), so the two cannot be mistaken for each other.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::job::functions::NewestSum;
use crate::sources::{InputScanExec, ReadSpec};

/// Prefix of an encoded input scan.
const SCAN_MAGIC: &[u8] = b"TALLY-SCAN-1\n";
/// What a tally function's definition holds: its name is enough, the code is in every tally.
const FUNCTION_MAGIC: &[u8] = b"TALLY-FN-1";

/// Ballista's physical codec, plus tally's input scan and functions.
#[derive(Debug, Default)]
pub struct TallyCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for TallyCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match buf.strip_prefix(SCAN_MAGIC) {
            Some(json) => {
                let read: ReadSpec = serde_json::from_slice(json).map_err(|e| {
                    DataFusionError::Internal(format!("cannot decode tally's input scan: {e}"))
                })?;
                let [work] = inputs else {
                    return Err(DataFusionError::Internal(format!(
                        "tally's input scan has one input, its work list; got {}",
                        inputs.len()
                    )));
                };
                Ok(Arc::new(InputScanExec::rebuild(work.clone(), read)?))
            }
            None => self.ballista.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match node.downcast_ref::<InputScanExec>() {
            Some(scan) => {
                buf.extend_from_slice(SCAN_MAGIC);
                serde_json::to_writer(&mut *buf, scan.read_spec()).map_err(|e| {
                    DataFusionError::Internal(format!("cannot encode tally's input scan: {e}"))
                })
            }
            None => self.ballista.try_encode(node, buf, proto_converter),
        }
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        if buf == FUNCTION_MAGIC && name == NewestSum::NAME {
            return Ok(Arc::new(AggregateUDF::from(NewestSum::new())));
        }
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if node.name() == NewestSum::NAME {
            buf.extend_from_slice(FUNCTION_MAGIC);
            return Ok(());
        }
        self.ballista.try_encode_udaf(node, buf)
    }
}
