"""Makes the ModernBERT reference that lemur-text's ModernBERT backbone is checked against.

Run with pylate 1.6.0 (sentence-transformers 5.3.0, transformers 5.3.0, tokenizers, torch
2.11.0, CPU), outside the repository:
    python make_reference.py DOCS_JSONL OUT_DIR
DOCS_JSONL is ../shared/data/dev-cacm/docs.jsonl (the CACM abstracts), on which a small
byte-level BPE tokenizer is trained with ModernBERT's special tokens and template. A
ModernBERT of 4 layers (global, sliding, sliding, global), width 64, 4 heads, a GeGLU of 96
and a window of 8 tokens either side is initialised at random (seed 0) and saved with
transformers; PyLate then builds a ColBERT model on it (the [Q] / [D] prefix tokens added,
a Dense 64 -> 32 projection, query_length 24), which is saved as OUT_DIR/model.
Writes OUT_DIR/reference.safetensors:
- h{i} / h{i}_ids: transformers' ModernBertModel last_hidden_state of text i of `backbone`
  in texts.json, alone (no padding), float32 [tokens, 64], and its input ids;
- q{i} / d{i}: model.encode(..., is_query=True/False) float32 [rows, 32], and q{i}_ids /
  d{i}_ids: PyLate's input_ids before rows are dropped.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
from transformers import ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast
from pylate import models

docs_path, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
texts = [json.loads(line)["text"] for line in open(docs_path, encoding="utf-8")]

# A byte-level BPE like ModernBERT's (GPT-NeoX style), small.
specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
tok = Tokenizer(tok_models.BPE(unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator(texts, trainer)
cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
tok.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
    special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                               sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                               model_max_length=512)
base = os.path.join(out, "base")
fast.save_pretrained(base)

torch.manual_seed(0)
config = ModernBertConfig(
    vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
    num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=512,
    local_attention=16, global_attn_every_n_layers=3,
    pad_token_id=tok.token_to_id("[PAD]"), cls_token_id=cls, sep_token_id=sep,
    bos_token_id=cls, eos_token_id=sep,
    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
)
backbone = ModernBertModel(config)
# Random LayerNorm gains (init leaves them at 1), so a wrong norm cannot hide.
with torch.no_grad():
    for name, p in backbone.named_parameters():
        if "norm" in name:
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
backbone.eval()
backbone.save_pretrained(base)

long_doc = " ".join(texts[i] for i in range(40, 46))
backbone_texts = [
    "Hash table search with open addressing",
    long_doc,
    "a",
]
arrays = {}
with torch.no_grad():
    for i, text in enumerate(backbone_texts):
        ids = fast(text, return_tensors="pt")["input_ids"]
        state = backbone(input_ids=ids).last_hidden_state[0]
        arrays[f"h{i}"] = state.numpy().astype(np.float32)
        arrays[f"h{i}_ids"] = ids[0].numpy().astype(np.int64)

torch.manual_seed(0)
m = models.ColBERT(model_name_or_path=base, device="cpu", query_length=24, document_length=96,
                   embedding_size=32)
m.save(os.path.join(out, "model"))
Q = [
    "what is late interaction retrieval?",
    "Algorithms for sorting on tape units",
    "a",
    "   leading and trailing spaces   ",
    "an extremely long query " + "that keeps going " * 10,
]
D = [
    texts[0],
    "The cat sat on the mat; it was warm, sunny & quiet!",
    long_doc,
    "x",
    "Punctuation only: ... !!! ??? ---",
]
q = m.encode(Q, is_query=True, batch_size=2)
d = m.encode(D, is_query=False, batch_size=2)
qf = m.encode(Q, is_query=True, output_value=None, batch_size=2)
df = m.encode(D, is_query=False, output_value=None, batch_size=2)
for i in range(len(Q)):
    arrays[f"q{i}"] = np.asarray(q[i], dtype=np.float32)
    arrays[f"q{i}_ids"] = np.asarray(qf["input_ids"][i]).astype(np.int64)
for i in range(len(D)):
    arrays[f"d{i}"] = np.asarray(d[i], dtype=np.float32)
    arrays[f"d{i}_ids"] = np.asarray(df["input_ids"][i]).astype(np.int64)
for k, v in arrays.items():
    if not np.all(np.isfinite(v)):
        print("NOT FINITE:", k)
save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
          os.path.join(out, "reference.safetensors"))
with open(os.path.join(out, "texts.json"), "w") as f:
    json.dump({"backbone": backbone_texts, "queries": Q, "documents": D}, f,
              ensure_ascii=False, indent=1)
print({k: v.shape for k, v in arrays.items() if not k.endswith("_ids")})
