"""Corpora to lhotse manifests.

Every importer writes ``<manifest_dir>/<corpus>_recordings_<split>.jsonl.gz`` and
``<manifest_dir>/<corpus>_supervisions_<split>.jsonl.gz`` and returns
:class:`dsr.data.report.PrepareReport` objects that say what was kept and what was
skipped, and why.

Modules:

* :mod:`dsr.data.folder` -- ``audio/<utt-id>.<ext>`` + ``utt-id<TAB>text`` folders.
* :mod:`dsr.data.kaldi_dir` -- Kaldi data directories (``wav.scp``, ``text``, ...).
* :mod:`dsr.data.librispeech`, :mod:`dsr.data.aishell`, :mod:`dsr.data.musan` -- published
  corpora in the layouts of lhotse's recipes, downloaded with lhotse's downloaders; shared
  machinery (parallel audio checks, skip reports, download errors) in :mod:`dsr.data.corpus_import`.

The embedded synthetic corpus (offline TTS and its sentence grammar) is :mod:`dsr.synth`;
reading cuts manifests and batching them for decoding are :mod:`dsr.data.cuts` and
:mod:`dsr.data.batches`.

Submodules are not imported here: importing lhotse (and torch with it) takes
seconds, and the sentence generator should not pay for that.
"""
