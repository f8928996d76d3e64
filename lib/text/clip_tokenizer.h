// CLIP BPE tokenizer (vocab.json + merges.txt).
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
