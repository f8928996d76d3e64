#include "text/sentencepiece.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "lli/error.h"

namespace lli::text {

namespace fs = std::filesystem;

using StrCb = void (*)(void*, const char*, size_t);

struct SentencePiece::Api {
  void* (*load)(const char*, int, StrCb, void*);
  void (*free_)(void*);
  void (*encode_ids)(void*, const char*, size_t, void (*)(void*, const int*, size_t), void*);
  void (*encode_pieces)(void*, const char*, size_t, StrCb, void*);
  void (*decode_ids)(void*, const int*, size_t, StrCb, void*);
  void (*decode_pieces)(void*, const char* const*, const size_t*, size_t, StrCb, void*);
  int (*piece_size)(void*);
  void (*id_to_piece)(void*, int, StrCb, void*);
  int (*piece_to_id)(void*, const char*, size_t);
  float (*score)(void*, int);
  int (*is)(void*, int, int);
  int (*special_id)(void*, int);
};

namespace {

void append_str(void* ctx, const char* d, size_t n) { static_cast<std::string*>(ctx)->append(d, n); }
void push_str(void* ctx, const char* d, size_t n) { static_cast<std::vector<std::string>*>(ctx)->emplace_back(d, n); }
void set_ids(void* ctx, const int* ids, size_t n) { static_cast<std::vector<int>*>(ctx)->assign(ids, ids + n); }

std::vector<fs::path> shim_candidates() {
  std::vector<fs::path> c;
  const char* name = "liblli_spm.so";
  if (const char* e = std::getenv("LLI_SPM_SHIM")) c.emplace_back(e);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    c.push_back(exe.parent_path() / name);
    c.push_back(exe.parent_path() / ".." / "lib" / "lli" / name);
  }
#ifdef LLI_INSTALL_LIBDIR
  c.push_back(fs::path(LLI_INSTALL_LIBDIR) / "lli" / name);
#endif
#ifdef LLI_BUILD_SHIM_DIR
  c.push_back(fs::path(LLI_BUILD_SHIM_DIR) / name);
#endif
  return c;
}

const SentencePiece::Api* load_api(void** handle_out) {
  static std::once_flag once;
  static SentencePiece::Api api{};
  static void* handle = nullptr;
  static std::string error;
  std::call_once(once, [] {
    std::string tried;
    for (const auto& p : shim_candidates()) {
      std::error_code ec;
      if (!fs::exists(p, ec)) {
        tried += " " + p.string();
        continue;
      }
      handle = ::dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!handle) {
        error = p.string() + ": " + ::dlerror();
        return;
      }
      break;
    }
    if (!handle) {
      if (error.empty()) error = "liblli_spm.so not found (looked in:" + tried + "; set LLI_SPM_SHIM)";
      return;
    }
    auto sym = [&](const char* n) {
      void* s = ::dlsym(handle, n);
      if (!s && error.empty()) error = std::string("liblli_spm.so lacks ") + n;
      return s;
    };
    api.load = reinterpret_cast<decltype(api.load)>(sym("lli_spm_load"));
    api.free_ = reinterpret_cast<decltype(api.free_)>(sym("lli_spm_free"));
    api.encode_ids = reinterpret_cast<decltype(api.encode_ids)>(sym("lli_spm_encode_ids"));
    api.encode_pieces = reinterpret_cast<decltype(api.encode_pieces)>(sym("lli_spm_encode_pieces"));
    api.decode_ids = reinterpret_cast<decltype(api.decode_ids)>(sym("lli_spm_decode_ids"));
    api.decode_pieces = reinterpret_cast<decltype(api.decode_pieces)>(sym("lli_spm_decode_pieces"));
    api.piece_size = reinterpret_cast<decltype(api.piece_size)>(sym("lli_spm_piece_size"));
    api.id_to_piece = reinterpret_cast<decltype(api.id_to_piece)>(sym("lli_spm_id_to_piece"));
    api.piece_to_id = reinterpret_cast<decltype(api.piece_to_id)>(sym("lli_spm_piece_to_id"));
    api.score = reinterpret_cast<decltype(api.score)>(sym("lli_spm_score"));
    api.is = reinterpret_cast<decltype(api.is)>(sym("lli_spm_is"));
    api.special_id = reinterpret_cast<decltype(api.special_id)>(sym("lli_spm_special_id"));
  });
  if (!error.empty()) throw ModelError("sentencepiece: " + error);
  *handle_out = handle;
  return &api;
}

}  // namespace

SentencePiece SentencePiece::load(const std::string& model_path, bool add_dummy_prefix) {
  void* lib = nullptr;
  const Api* api = load_api(&lib);
  std::error_code ec;
  if (!fs::is_regular_file(model_path, ec)) throw ModelError(model_path + ": SentencePiece model not found");
  std::string err;
  void* h = api->load(model_path.c_str(), add_dummy_prefix ? 1 : 0, append_str, &err);
  if (!h) throw ModelError(model_path + ": cannot load the SentencePiece model (" + err + ")");
  SentencePiece sp;
  sp.api_ = api;
  sp.handle_ = h;
  sp.path_ = model_path;
  return sp;
}

SentencePiece::SentencePiece(SentencePiece&& o) noexcept : api_(o.api_), handle_(o.handle_), path_(std::move(o.path_)) {
  o.handle_ = nullptr;
}
SentencePiece& SentencePiece::operator=(SentencePiece&& o) noexcept {
  if (this != &o) {
    if (handle_) api_->free_(handle_);
    api_ = o.api_;
    handle_ = o.handle_;
    path_ = std::move(o.path_);
    o.handle_ = nullptr;
  }
  return *this;
}
SentencePiece::~SentencePiece() {
  if (handle_) api_->free_(handle_);
}

std::vector<int> SentencePiece::encode_ids(std::string_view text) const {
  std::vector<int> ids;
  api_->encode_ids(handle_, text.data(), text.size(), set_ids, &ids);
  return ids;
}
std::vector<std::string> SentencePiece::encode_pieces(std::string_view text) const {
  std::vector<std::string> pieces;
  api_->encode_pieces(handle_, text.data(), text.size(), push_str, &pieces);
  return pieces;
}
std::string SentencePiece::decode_ids(const std::vector<int>& ids) const {
  std::string out;
  api_->decode_ids(handle_, ids.data(), ids.size(), append_str, &out);
  return out;
}
std::string SentencePiece::decode_pieces(const std::vector<std::string>& pieces) const {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (const auto& p : pieces) {
    ptrs.push_back(p.data());
    lens.push_back(p.size());
  }
  std::string out;
  api_->decode_pieces(handle_, ptrs.data(), lens.data(), pieces.size(), append_str, &out);
  return out;
}
int SentencePiece::piece_size() const { return api_->piece_size(handle_); }
std::string SentencePiece::id_to_piece(int id) const {
  std::string s;
  api_->id_to_piece(handle_, id, append_str, &s);
  return s;
}
int SentencePiece::piece_to_id(std::string_view piece) const { return api_->piece_to_id(handle_, piece.data(), piece.size()); }
float SentencePiece::score(int id) const { return api_->score(handle_, id); }
bool SentencePiece::is_unknown(int id) const { return api_->is(handle_, id, 0) != 0; }
bool SentencePiece::is_control(int id) const { return api_->is(handle_, id, 1) != 0; }
bool SentencePiece::is_unused(int id) const { return api_->is(handle_, id, 2) != 0; }
bool SentencePiece::is_byte(int id) const { return api_->is(handle_, id, 3) != 0; }
int SentencePiece::unk_id() const { return api_->special_id(handle_, 0); }
int SentencePiece::bos_id() const { return api_->special_id(handle_, 1); }
int SentencePiece::eos_id() const { return api_->special_id(handle_, 2); }
int SentencePiece::pad_id() const { return api_->special_id(handle_, 3); }

}  // namespace lli::text
