"""Neural models: Conformer encoder (and its streaming runner), stateless predictor, joiner,
attention decoder and the hybrid model."""

from dsr.models.attention_decoder import AttentionDecoder
from dsr.models.config import ModelConfig, build_model, count_parameters
from dsr.models.conformer import ConformerEncoder, ConformerLayer, chunk_attention_mask
from dsr.models.joiner import Joiner
from dsr.models.predictor import StatelessPredictor
from dsr.models.streaming import StreamingEncoder
from dsr.models.subsampling import Conv2dSubsampling
from dsr.models.transducer import HybridTransducer

__all__ = [
    "AttentionDecoder",
    "Conv2dSubsampling",
    "ConformerEncoder",
    "ConformerLayer",
    "HybridTransducer",
    "Joiner",
    "ModelConfig",
    "StatelessPredictor",
    "StreamingEncoder",
    "build_model",
    "chunk_attention_mask",
    "count_parameters",
]
