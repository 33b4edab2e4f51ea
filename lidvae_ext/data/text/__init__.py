"""Text data for sentence VAEs: vocabulary, synthetic corpus, WordNet sentences, user files."""

from .corpus import TEXT_BUILTIN, TextDataset, is_text_data, load_text_dataset, read_text_file, read_wordnet_examples
from .synthetic import SyntheticTextConfig, generate_synthetic_text
from .vocab import (BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocabulary, check_tokens, pad_sequences,
                    tokenize)

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "SPECIALS", "TEXT_BUILTIN", "UNK_ID", "SyntheticTextConfig", "TextDataset",
    "Vocabulary", "check_tokens", "generate_synthetic_text", "is_text_data", "load_text_dataset", "pad_sequences",
    "read_text_file", "read_wordnet_examples", "tokenize",
]
