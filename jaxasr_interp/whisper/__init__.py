"""Whisper: dimensions, the model as pure functions, cached greedy decoding, tokenizer, audio
front end, and the user-facing ``load`` / ``transcribe``."""
