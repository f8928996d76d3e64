// SentencePiece, loaded through a small shim library with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece embeds its own protobuf-lite 3.14 and exports its symbols;
// libtorch links the system libprotobuf 3.21. Linking both into one executable crashes at start-up
// (libprotobuf's static initialisers bind to sentencepiece's copies) - measured: segfault in
// ReflectionOps::FindInitializationErrors before main. Linking libprotobuf first instead aborts with
// "compiled against 3.14.0 ... not compatible with 3.21.12". So libsentencepiece is never linked
// into lli's executables: liblli_spm.so (lib/text/spm_shim/) links it, exports a C API, and is
// opened with RTLD_LOCAL|RTLD_DEEPBIND so its protobuf symbols stay private.
//
// The shim is looked up in: $LLI_SPM_SHIM, the executable's directory, <exe>/../lib/lli,
// the install libdir (LLI_INSTALL_LIBDIR), the build tree (LLI_BUILD_SHIM_DIR).
// Torch-free.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lli::text {

class SentencePiece {
 public:
  // Loads a SentencePiece model file. `add_dummy_prefix`: when false, the model's
  // normalizer_spec.add_dummy_prefix is switched off before loading (what transformers'
  // LlamaTokenizer does with legacy=false). ModelError naming the file on failure.
  static SentencePiece load(const std::string& model_path, bool add_dummy_prefix = true);

  SentencePiece(SentencePiece&&) noexcept;
  SentencePiece& operator=(SentencePiece&&) noexcept;
  ~SentencePiece();

  std::vector<int> encode_ids(std::string_view text) const;
  std::vector<std::string> encode_pieces(std::string_view text) const;
  std::string decode_ids(const std::vector<int>& ids) const;
  std::string decode_pieces(const std::vector<std::string>& pieces) const;

  int piece_size() const;
  std::string id_to_piece(int id) const;
  int piece_to_id(std::string_view piece) const;  // unk_id() when absent
  float score(int id) const;
  bool is_unknown(int id) const;
  bool is_control(int id) const;
  bool is_unused(int id) const;
  bool is_byte(int id) const;
  int unk_id() const;
  int bos_id() const;
  int eos_id() const;
  int pad_id() const;

  struct Api;  // the shim's C functions (sentencepiece.cpp)

 private:
  SentencePiece() = default;
  const Api* api_ = nullptr;
  void* handle_ = nullptr;
  std::string path_;
};

}  // namespace lli::text
