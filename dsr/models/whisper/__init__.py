"""Pretrained Whisper inside dsr: the modules (:mod:`.model`), weights from OpenAI, Hugging Face
and CTranslate2 files (:mod:`.load`), its tokenizer, and the encoder adapter dsr's heads sit on."""
