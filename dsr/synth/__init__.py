"""The embedded synthetic corpus: sentences from a template grammar, spoken by offline TTS.

* :mod:`dsr.synth.corpus` -- ``dsr prepare synth``: synthesise, split by voice, write manifests
  (through :func:`dsr.data.folder.prepare_folder`, like any folder corpus).
* :mod:`dsr.synth.sentences` -- the template grammar that provides its text.
* :mod:`dsr.synth.tts` -- the Debian TTS engines (espeak-ng, flite, ...) and their voices.

Submodules are not imported here: the sentence generator should not pay for lhotse and torch.
"""
