"""Causal-LLM n-best rescoring: scoring, rescoring and tuning, fine-tuning and training LMs.

Needs the optional packages of the ``lm`` extra (transformers, gguf, peft, tokenizers,
safetensors); every module imports them lazily so that ``import dsr`` never does.
"""
