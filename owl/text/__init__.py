"""Text side: the CLIP BPE tokenizer and prompt templates."""
