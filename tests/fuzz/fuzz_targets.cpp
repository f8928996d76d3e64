#include "fuzz/fuzz_targets.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "lli/error.h"
#include "lli/image.h"
#include "lli/prompt.h"
#include "lli/registry.h"
#include "lli/safetensors.h"
#include "lli/session.h"
#include "text/chat_template.h"
#include "text/clip_tokenizer.h"
#include "text/llama_tokenizer.h"
#include "text/sentencepiece.h"

namespace lli::fuzz {

namespace {

namespace fs = std::filesystem;

// Where the targets that need a file write it: $LLI_FUZZ_SCRATCH (scripts/fuzz.sh), else a
// directory of this process on tmpfs (or the temp directory), removed at exit.
struct Scratch {
  fs::path dir;
  bool owned = false;
  Scratch() {
    if (const char* e = std::getenv("LLI_FUZZ_SCRATCH"); e && *e) {
      dir = e;
    } else {
      std::error_code ec;
      const fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
      dir = base / ("lli-fuzz-" + std::to_string(::getpid()));
      owned = true;
    }
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    if (owned) fs::remove_all(dir, ec);
  }
};

const fs::path& scratch() {
  static Scratch s;
  return s.dir;
}

void write_bytes(const fs::path& p, std::string_view data) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) throw std::runtime_error("fuzz: cannot write " + p.string());
}

fs::path fixtures() { return fs::path(LLI_TEST_FIXTURES); }

// A finding that is not a crash: an invariant the code promises (e.g. a round trip) broke.
[[noreturn]] void finding(const std::string& what) { throw std::logic_error("fuzz finding: " + what); }

// Reads every byte of a tensor so that a bad offset would be caught by ASan.
unsigned touch(const void* p, std::size_t n) {
  unsigned acc = 0;
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) acc += b[i];
  return acc;
}

// ---- safetensors header (a whole .safetensors file) ---------------------------------------------
void safetensors_file(std::string_view data) {
  const fs::path p = scratch() / "model.safetensors";
  write_bytes(p, data);
  volatile unsigned sink = 0;
  const auto f = st::File::open(p);
  for (const auto& t : f.tensors()) sink = sink + touch(t.data, t.nbytes);
  for (const auto& [k, v] : f.metadata()) sink = sink + static_cast<unsigned>(k.size() + v.size());
  // The copy residency reads with pread into its own memory, converting floats to F32.
  st::OpenOptions copy;
  copy.residency = st::Residency::copy;
  copy.float_dtype = st::DType::F32;
  copy.threads = 1;
  const auto c = st::File::open(p, copy);
  if (c.tensors().size() != f.tensors().size()) finding("mmap and copy residency list different tensors");
  for (const auto& t : c.tensors()) sink = sink + touch(t.data, t.nbytes);
}

// ---- index.json resolver: the input is model.safetensors.index.json beside two valid shards -----
void safetensors_index(std::string_view data) {
  static const fs::path dir = [] {
    const fs::path d = scratch() / "ckpt";
    fs::create_directories(d);
    const float a[2] = {1.0f, 2.0f};
    const std::uint16_t b[3] = {0x3c00, 0x4000, 0x4200};
    st::write_file(d / "model-00001-of-00002.safetensors", {{"a.weight", st::DType::F32, {2}, a, sizeof(a)}});
    st::write_file(d / "model-00002-of-00002.safetensors", {{"b.weight", st::DType::F16, {3}, b, sizeof(b)}});
    return d;
  }();
  write_bytes(dir / "model.safetensors.index.json", data);
  volatile unsigned sink = 0;
  const auto ck = st::Checkpoint::open(dir);
  for (const auto& name : ck.names()) {
    const auto& t = ck.get(name);
    sink = sink + touch(t.data, t.nbytes);
  }
}

// ---- prompt JSON and the inline prompt flags -----------------------------------------------------
void prompt(std::string_view data) {
  const std::string s(data);
  try {
    (void)parse_point_flag(s);
  } catch (const Error&) {
  }
  try {
    (void)parse_box_flag(s);
  } catch (const Error&) {
  }
  try {
    (void)parse_stroke_flag(s);
  } catch (const Error&) {
  }
  const Prompt p = parse_prompt(data, "p.json");
  const std::string json = prompt_to_json(p);
  // The serialized form must parse back (sessions store it and read it again).
  try {
    (void)parse_prompt(json, "again.json");
  } catch (const Error& e) {
    finding(std::string("prompt_to_json output does not parse back: ") + e.what());
  }
  (void)to_pixels(p, 640, 480);
}

// ---- session JSON ---------------------------------------------------------------------------------
void session(std::string_view data) {
  static const fs::path dir = [] {
    const fs::path d = scratch() / "session";
    fs::create_directories(d);
    return d;
  }();
  const Session s = Session::parse(data, "s.json", dir);
  const std::string dumped = s.dump();
  try {
    const Session again = Session::parse(dumped, "again.json", dir);
    if (again.dump() != dumped) finding("session dump is not stable under parse + dump");
  } catch (const Error& e) {
    finding(std::string("session dump does not parse back: ") + e.what());
  }
  for (int i = 0; i < s.size(); ++i) {
    try {
      (void)s.image_path(i);  // the step images are not there: InputError
    } catch (const Error&) {
    }
  }
  try {
    (void)s.input_step();
  } catch (const Error&) {
  }
}

// ---- models.yaml registry -----------------------------------------------------------------------
void registry(std::string_view data) {
  try {
    (void)expand_path(std::string(data));
  } catch (const Error&) {
  }
  const Registry r = Registry::parse(std::string(data), scratch() / "models.yaml");
  for (const auto& name : r.model_names()) {
    try {
      (void)r.resolve_model(name);
    } catch (const Error&) {
    }
  }
  for (const char* tool : {"lli-chat", "lli-segment", "lli-edit", "lli-generate"}) {
    (void)r.tool_default(tool, "model");
    try {
      (void)r.tool_double(tool, "temperature", 0.5);
      (void)r.tool_int(tool, "max_new_tokens", 16);
      (void)r.tool_bool(tool, "multimask", false);
    } catch (const Error&) {
    }
  }
}

// ---- images: format sniffing, header probe, completeness checks, decoding -------------------------
void image(std::string_view data) {
  // --allow-truncated is process state: put it back (the regression replay shares the process).
  struct Restore {
    bool allow = allow_truncated_images();
    ~Restore() { set_allow_truncated_images(allow); }
  } restore;
  try {
    (void)probe_image_header(data, "img");
  } catch (const Error&) {
  }
  set_allow_truncated_images(false);
  try {
    (void)decode_image_bytes(data, "img");
  } catch (const Error&) {
  }
  set_allow_truncated_images(true);
  (void)decode_image_bytes(data, "img");
}

// ---- SentencePiece: the input is a tokenizer.model -----------------------------------------------
void sentencepiece_model(std::string_view data) {
  const auto sp = text::SentencePiece::from_bytes(data, "tokenizer.model", /*add_dummy_prefix=*/data.size() % 2 == 0);
  for (const char* t : {"Hello world", "  two  spaces ", "Gr\xC3\xBC\xC3\x9F" "e \xF0\x9F\xA6\x99 \xFF", ""}) {
    const auto ids = sp.encode_ids(t);
    (void)sp.encode_pieces(t);
    (void)sp.decode_ids(ids);
  }
  std::vector<int> all;
  for (int i = 0; i < sp.piece_size() && i < 512; ++i) all.push_back(i);
  (void)sp.decode_ids(all);
  (void)sp.decode_pieces({"<unk>", "\xE2\x96\x81", "<0x41>", "<0xC3>", "x"});
  (void)sp.bos_id();
  (void)sp.unk_id();
}

// Ids from the input bytes (two per id), some outside the vocabulary.
std::vector<text::TokenId> ids_from(std::string_view data, std::int64_t range) {
  std::vector<text::TokenId> ids;
  for (std::size_t i = 0; i + 1 < data.size() && ids.size() < 256; i += 2) {
    const auto v = static_cast<std::uint16_t>(static_cast<unsigned char>(data[i]) |
                                              (static_cast<unsigned char>(data[i + 1]) << 8));
    ids.push_back(static_cast<text::TokenId>(v % (range + 8)) - 4);
  }
  return ids;
}

// ---- the LLaMA tokenizer of llava-tiny-a (SentencePiece BPE + added tokens): the input is text --
// The first byte picks the check (one per run keeps the runs fast): encode + decode + streaming
// with legacy = true or false, or decoding ids taken from the bytes.
void llama_tokenizer(std::string_view data) {
  static const auto legacy = text::LlamaTokenizer::load(fixtures() / "llava-tiny-a");
  static const auto modern = text::LlamaTokenizer::load(fixtures() / "llava-tiny-a", text::LlamaTokenizerOptions{false});
  if (data.empty()) return;
  const unsigned op = static_cast<unsigned char>(data[0]) % 3;
  const std::string_view text = data.substr(1);
  const text::LlamaTokenizer& tok = op == 1 ? modern : legacy;
  if (op == 2) {
    (void)tok.decode(ids_from(text, tok.vocab_size()), /*skip_special_tokens=*/data.size() % 2 == 0);
    return;
  }
  const auto ids = tok.encode(text);
  (void)tok.decode(ids);
  // Streaming re-decodes the ids so far at every push (quadratic): the first 64 ids.
  const std::vector<text::TokenId> head(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(ids.size(), 64)));
  text::StreamDecoder sd(tok);
  std::string streamed;
  for (const auto id : head) streamed += sd.push(id);
  streamed += sd.finish();
  if (streamed != tok.decode(head)) finding("streamed decode differs from decode");
}

// ---- the CLIP BPE tokenizer of clip-text-tiny: the input is text ---------------------------------
// The first byte picks the call: unbounded tokenize + encode + decode, encode truncated to 77,
// decoding ids taken from the bytes, or a padded batch.
void clip_tokenizer(std::string_view data) {
  static const auto tok = text::CLIPTokenizer::load(fixtures() / "clip-text-tiny");
  if (data.empty()) return;
  const std::string_view text = data.substr(1);
  switch (static_cast<unsigned char>(data[0]) % 4) {
    case 0: {
      (void)tok.tokenize(text);
      (void)tok.decode(tok.encode(text));
      break;
    }
    case 1: (void)tok.encode(text, 77); break;
    case 2: (void)tok.decode(ids_from(text, 49408), data.size() % 2 == 0); break;
    default:
      (void)tok.encode_batch({std::string(text), std::string(text.substr(0, text.size() / 2))},
                             text::CLIPTokenizer::Padding::longest, 77);
  }
}

// ---- chat template rendering and stop strings: fields separated by 0x1F --------------------------
void chat_template(std::string_view data) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = data.find('\x1f', start);
    fields.emplace_back(data.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  text::ChatTemplate t;
  t.system = fields[0];
  t.style = data.size() % 2 ? text::ChatStyle::llava_hf : text::ChatStyle::llava_v1;
  std::vector<text::ChatTurn> turns;
  for (std::size_t i = 1; i < fields.size(); i += 2) {
    text::ChatTurn turn;
    turn.question = fields[i];
    if (i + 1 < fields.size()) turn.answer = fields[i + 1];
    turn.image = i == 1;
    turns.push_back(std::move(turn));
  }
  try {
    (void)t.render(turns);
  } catch (const Error&) {
  }
  const auto stops = t.stop_strings();
  std::string whole(data);
  std::string trimmed = whole;
  text::trim_at_stop(trimmed, stops);
  text::StopStringFilter f(stops);
  std::string acc;
  const std::size_t step = 1 + data.size() % 7;
  for (std::size_t i = 0; i < whole.size(); i += step) acc += f.push(std::string_view(whole).substr(i, step));
  acc += f.finish();
  if (acc != trimmed) finding("StopStringFilter differs from trim_at_stop");
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"safetensors", safetensors_file, "a .safetensors file: header JSON, offsets, dtypes; mmap and copy residency"},
      {"safetensors_index", safetensors_index, "model.safetensors.index.json beside two shards: the shard resolver"},
      {"prompt", prompt, "prompt JSON (parse, serialize, parse again, to pixels) and the --point/--box/--stroke flags"},
      {"session", session, "session JSON (parse, dump, parse again, step files)"},
      {"registry", registry, "models.yaml (parse, resolve every model, tool defaults) and path expansion"},
      {"image", image, "image bytes through lli's loader: sniffing, header probe, completeness, decoding"},
      {"sentencepiece_model", sentencepiece_model, "a tokenizer.model: protobuf reader, model checks, encode/decode"},
      {"llama_tokenizer", llama_tokenizer, "text through the LLaMA tokenizer (legacy and not), decode, streaming"},
      {"clip_tokenizer", clip_tokenizer, "text through the CLIP BPE tokenizer, truncation, batch, decode"},
      {"chat_template", chat_template, "chat turns through the template; stop strings, streamed vs whole"},
  };
  return all;
}

const Target* find_target(std::string_view name) {
  for (const auto& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

void run_one(const Target& target, std::string_view data) {
  try {
    target.run(data);
  } catch (const Error&) {
  }
}

}  // namespace lli::fuzz
