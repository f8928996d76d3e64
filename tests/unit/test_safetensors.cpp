// safetensors reader/writer: every validation rule rejects with its own message, round trips of
// every dtype, sharded checkpoints (and their path confinement), Git LFS pointers, the real fixture.
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <vector>
#include <nlohmann/json.hpp>

#include "lli/error.h"
#include "io/dtype_convert.h"
#include "lli/safetensors.h"
#include "test_util.h"

namespace {

using lli::test::TempDir;
namespace fs = std::filesystem;
namespace st = lli::st;

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A raw safetensors file: length, header text (padded to 8 with spaces), then data.
std::string raw(const std::string& header, const std::string& data) {
  std::string h = header;
  h.append((8 - h.size() % 8) % 8, ' ');
  return le64(h.size()) + h + data;
}

// Runs f and returns the ModelError message ("<no error>" when nothing was thrown).
template <class F>
std::string model_error(F&& f) {
  try {
    f();
  } catch (const lli::ModelError& e) {
    CHECK(e.code() == lli::ExitCode::model);
    return e.what();
  }
  return "<no error>";
}

// Writes bytes to a temp file, opens it, returns the rejection message; also checks the file is named.
std::string reject(const std::string& bytes) {
  TempDir dir;
  fs::path p = dir / "bad.safetensors";
  write_bytes(p, bytes);
  std::string msg = model_error([&] { st::File::open(p); });
  CHECK_MESSAGE(msg.rfind(p.string() + ": ", 0) == 0, msg);
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, msg);
  return msg;
}

// Writes bytes to a temp file and opens it; the message of any rejection, or "" when it opens.
std::string open_error(const std::string& bytes) {
  TempDir dir;
  write_bytes(dir / "ok.safetensors", bytes);
  std::string msg = model_error([&] { st::File::open(dir / "ok.safetensors"); });
  return msg == "<no error>" ? "" : msg;
}

const std::string kLfsPointer =
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n";

// A valid one-tensor file of F32 [2] (8 data bytes).
std::string good_file(const std::string& name = "a") {
  return raw("{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", std::string(8, '\1'));
}

std::vector<float> floats(std::size_t n, float base) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = base + static_cast<float>(i);
  return v;
}

}  // namespace

// ---- malformed files: one rule each ---------------------------------------------------------------
TEST_CASE("safetensors rejects an empty file") { CHECK(has(reject(""), "file is empty (0 bytes)")); }

TEST_CASE("safetensors rejects a file shorter than the 8-byte header length") {
  CHECK(has(reject("abc"), "too short for the 8-byte header length"));
}

TEST_CASE("safetensors rejects a header length over 100,000,000 before allocating") {
  // Lengths that would be absurd allocations: the check happens on the 8 bytes alone.
  CHECK(has(reject(le64(100'000'001) + "{}"), "header length 100000001 exceeds the limit of 100000000"));
  CHECK(has(reject(le64(UINT64_MAX) + "{}"), "exceeds the limit of 100000000"));
}

TEST_CASE("safetensors rejects a header length past the end of the file") {
  CHECK(has(reject(le64(64) + "{}      "), "header length 64 runs past the end of the file (16 bytes"));
}

TEST_CASE("safetensors rejects a header that is not JSON") {
  CHECK(has(reject(raw("{\"a\": ", "")), "header is not valid JSON"));
  CHECK(has(reject(raw("{\"a\xff\": {}}", "")), "header is not valid JSON"));  // invalid UTF-8
}

TEST_CASE("safetensors rejects a header that is not a JSON object") {
  CHECK(has(reject(raw("[1, 2]", "")), "header is not a JSON object"));
}

TEST_CASE("safetensors rejects duplicate tensor names") {
  std::string h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  CHECK(has(reject(raw(h, std::string(8, '\0'))), "header has a duplicate tensor name 'a'"));
}

TEST_CASE("safetensors rejects a duplicate field in a tensor entry") {
  std::string h = "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  CHECK(has(reject(raw(h, std::string(4, '\0'))), "tensor 'w': duplicate field 'dtype'"));
}

TEST_CASE("safetensors rejects an unknown dtype") {
  std::string h = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  CHECK(has(reject(raw(h, std::string(1, '\0'))), "tensor 'w': unsupported dtype 'F8_E4M3'"));
  std::string h2 = "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}";
  CHECK(has(reject(raw(h2, std::string(1, '\0'))), "tensor 'w': dtype is not a string"));
}

TEST_CASE("safetensors rejects shape entries that are not non-negative integers") {
  auto with_shape = [](const std::string& shape) {
    return raw("{\"w\":{\"dtype\":\"U8\",\"shape\":" + shape + ",\"data_offsets\":[0,2]}}", "xy");
  };
  CHECK(has(reject(with_shape("[-2]")), "tensor 'w': shape entry -2 is not a non-negative integer"));
  CHECK(has(reject(with_shape("[2.0]")), "shape entry 2.0 is not a non-negative integer"));
  CHECK(has(reject(with_shape("[\"2\"]")), "shape entry \"2\" is not a non-negative integer"));
  CHECK(has(reject(with_shape("{\"0\":2}")), "tensor 'w': shape is not an array"));
  CHECK(open_error(with_shape("[2]")) == "");
}

TEST_CASE("safetensors rejects a shape whose byte size overflows") {
  std::string h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}";
  CHECK(has(reject(raw(h, "")), "tensor 'w': shape [4294967296, 4294967296] x F32 overflows the byte size"));
  // numel fits in 64 bits, numel x 8 bytes does not
  std::string h2 = "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}";
  CHECK(has(reject(raw(h2, "")), "x F64 overflows the byte size"));
  // an overflowing product with a zero dimension is an empty tensor
  std::string h3 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}";
  CHECK(open_error(raw(h3, "")) == "");
}

TEST_CASE("safetensors rejects data_offsets whose span differs from shape x dtype") {
  std::string h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
  CHECK(has(reject(raw(h, std::string(8, '\0'))),
            "tensor 'w': data_offsets [0, 8] span 8 bytes but shape [3] x F32 needs 12"));
}

TEST_CASE("safetensors rejects data_offsets with begin > end") {
  std::string h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}";
  CHECK(has(reject(raw(h, std::string(8, '\0'))), "tensor 'w': data_offsets [8, 4] has begin > end"));
}

TEST_CASE("safetensors rejects malformed data_offsets") {
  auto with_offsets = [](const std::string& o) {
    return raw("{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":" + o + "}}", "xy");
  };
  CHECK(has(reject(with_offsets("[0]")), "tensor 'w': data_offsets [0] is not [begin, end]"));
  CHECK(has(reject(with_offsets("[0,2,4]")), "is not [begin, end]"));
  CHECK(has(reject(with_offsets("[-1,1]")), "is not [begin, end]"));
}

TEST_CASE("safetensors rejects a first tensor that does not start at data offset 0") {
  std::string h = "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}";
  CHECK(has(reject(raw(h, "xxyy")), "tensor 'w': first tensor starts at data offset 2, not 0"));
}

TEST_CASE("safetensors rejects a gap between tensors") {
  std::string h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}";
  CHECK(has(reject(raw(h, "xxyyz")), "tensor 'b': gap in the data section: starts at 3 but tensor 'a' ends at 2"));
}

TEST_CASE("safetensors rejects overlapping tensors") {
  std::string h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}";
  CHECK(has(reject(raw(h, "xxyy")), "tensor 'b': overlaps tensor 'a': starts at 2 before its end 4"));
}

TEST_CASE("safetensors rejects trailing bytes after the last tensor") {
  std::string h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
  CHECK(has(reject(raw(h, "xxEXTRA")), "tensors cover 2 bytes of the 7-byte data section (trailing bytes"));
  CHECK(has(reject(raw("{}", "junk")), "tensors cover 0 bytes of the 4-byte data section"));
}

TEST_CASE("safetensors rejects a tensor past the end of a truncated file") {
  std::string h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}";
  CHECK(has(reject(raw(h, "xxxx")), "tensor 'a': data_offsets end 8 is past the end of the data section (4 bytes"));
}

TEST_CASE("safetensors rejects __metadata__ values that are not strings") {
  CHECK(has(reject(raw("{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", "")),
            "__metadata__ value of 'n' is number, not a string"));
  CHECK(has(reject(raw("{\"__metadata__\":[\"pt\"]}", "")), "__metadata__ is not a JSON object of string -> string"));
}

TEST_CASE("safetensors requires exactly dtype, shape and data_offsets in a tensor entry") {
  CHECK(has(reject(raw("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,0]}}", "")),
            "tensor 'w': header entry has no 'shape' field"));
  CHECK(has(reject(raw("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"extra\":1}}", "")),
            "tensor 'w': unknown field 'extra' in the header entry"));
  CHECK(has(reject(raw("{\"w\":[1,2]}", "")), "tensor 'w': header entry is not an object"));
}

TEST_CASE("safetensors names a Git LFS pointer file as such") {
  std::string msg = reject(kLfsPointer);
  CHECK(has(msg, "is a Git LFS pointer file, not the weights"));
  CHECK(has(msg, "git lfs pull"));
}

TEST_CASE("safetensors File::open reports missing files and directories") {
  TempDir dir;
  CHECK(has(model_error([&] { st::File::open(dir / "nope.safetensors"); }), "nope.safetensors: cannot open"));
  CHECK(has(model_error([&] { st::File::open(dir.path); }), "is a directory"));
}

// ---- valid files --------------------------------------------------------------------------------------
TEST_CASE("safetensors round trip of every dtype through write_file and File::open") {
  TempDir dir;
  fs::path p = dir / "all.safetensors";
  const st::DType all[] = {st::DType::F64, st::DType::F32, st::DType::F16, st::DType::BF16, st::DType::I64,
                           st::DType::I32, st::DType::I16, st::DType::I8,  st::DType::U8,   st::DType::BOOL};
  std::vector<std::string> buffers;
  std::vector<st::TensorData> in;
  int k = 0;
  for (st::DType d : all) {
    std::vector<std::int64_t> shape = {2, 3};
    std::string buf(6 * st::dtype_size(d), '\0');
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(d == st::DType::BOOL ? (i + k) % 2 : i * 7 + k);
    buffers.push_back(buf);
    in.push_back({std::string("t.") + st::dtype_name(d), d, shape, nullptr, buf.size()});
    ++k;
  }
  for (std::size_t i = 0; i < in.size(); ++i) in[i].data = buffers[i].data();
  // a scalar and an empty tensor
  float scalar = 3.5f;
  in.push_back({"scalar", st::DType::F32, {}, &scalar, 4});
  in.push_back({"empty", st::DType::F16, {0, 5}, nullptr, 0});
  st::write_file(p, in, {{"format", "pt"}, {"note", "hello"}});

  std::string bytes = read_bytes(p);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(n % 8 == 0);
  auto header_end = bytes.find_last_not_of(' ', 8 + n - 1);
  CHECK(bytes[header_end] == '}');  // padding is spaces only
  CHECK(nlohmann::json::parse(bytes.substr(8, n)).is_object());

  st::File f = st::File::open(p);
  CHECK(f.path() == p.string());
  CHECK(f.metadata().size() == 2);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "hello");
  REQUIRE(f.tensors().size() == in.size());
  const char* data_start = bytes.data();  // compare by content; offsets: tensors in the given order
  (void)data_start;
  std::size_t offset = 0;
  const char* base = static_cast<const char*>(f.tensors()[0].data);
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto& t = f.tensors()[i];
    CAPTURE(in[i].name);
    CHECK(t.name == in[i].name);
    CHECK(t.dtype == in[i].dtype);
    CHECK(t.shape == in[i].shape);
    CHECK(t.nbytes == in[i].nbytes);
    CHECK(t.file == p.string());
    CHECK(t.owner != nullptr);
    CHECK(static_cast<const char*>(t.data) == base + offset);  // written in the given order
    if (t.nbytes) CHECK(std::memcmp(t.data, in[i].data, t.nbytes) == 0);
    offset += t.nbytes;
  }
  CHECK(reinterpret_cast<std::uintptr_t>(base) % 8 == 0);  // data section aligned to 8
}

TEST_CASE("safetensors dtype names and sizes") {
  CHECK(st::dtype_size(st::DType::BF16) == 2);
  CHECK(st::dtype_size(st::DType::F64) == 8);
  CHECK(st::dtype_size(st::DType::BOOL) == 1);
  CHECK(std::string(st::dtype_name(st::DType::BF16)) == "BF16");
  CHECK(std::string(st::dtype_name(st::DType::BOOL)) == "BOOL");
}

TEST_CASE("safetensors accepts an empty header and lists tensors in data-offset order") {
  TempDir dir;
  write_bytes(dir / "e.safetensors", raw("{}", ""));
  CHECK(st::File::open(dir / "e.safetensors").tensors().empty());
  std::string h = "{\"z\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}";
  write_bytes(dir / "o.safetensors", raw(h, "xyz"));
  st::File f = st::File::open(dir / "o.safetensors");
  REQUIRE(f.tensors().size() == 2);
  CHECK(f.tensors()[0].name == "z");
  CHECK(f.tensors()[1].name == "a");
  CHECK(std::string(static_cast<const char*>(f.tensors()[1].data), 2) == "yz");
}

TEST_CASE("safetensors tensor data outlives the File and is copy-on-write") {
  TempDir dir;
  fs::path p = dir / "m.safetensors";
  auto v = floats(4, 1.0f);
  st::write_file(p, {{"w", st::DType::F32, {4}, v.data(), 16}});
  const std::string before = read_bytes(p);
  st::TensorRef ref;
  {
    st::File f = st::File::open(p);
    ref = f.tensors().at(0);
  }
  // The File is gone; the mapping lives on through ref.owner.
  CHECK(std::memcmp(ref.data, v.data(), 16) == 0);
  // An accidental write changes memory only (MAP_PRIVATE), never the file.
  float* w = static_cast<float*>(const_cast<void*>(ref.data));
  w[0] = -42.0f;
  CHECK(w[0] == -42.0f);
  CHECK(read_bytes(p) == before);
  CHECK(st::File::open(p).tensors()[0].nbytes == 16);
}

TEST_CASE("safetensors writer rejects inconsistent tensors and writes atomically") {
  TempDir dir;
  fs::path p = dir / "w.safetensors";
  float x[2] = {1, 2};
  CHECK_THROWS_AS(st::write_file(p, {{"a", st::DType::F32, {3}, x, 8}}), lli::RuntimeError);
  CHECK_THROWS_AS(st::write_file(p, {{"a", st::DType::F32, {2}, x, 8}, {"a", st::DType::F32, {2}, x, 8}}),
                  lli::RuntimeError);
  CHECK_THROWS_AS(st::write_file(p, {{"__metadata__", st::DType::F32, {2}, x, 8}}), lli::RuntimeError);
  CHECK(!fs::exists(p));
  write_bytes(p, "old contents");
  st::write_file(p, {{"a", st::DType::F32, {2}, x, 8}});
  CHECK(st::File::open(p).tensors().size() == 1);
  int n_files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    (void)e;
    ++n_files;
  }
  CHECK(n_files == 1);  // no temporary file left behind
  CHECK_THROWS_AS(st::write_file(dir / "no-such-dir" / "x.safetensors", {}), lli::Error);
}

// ---- checkpoints ----------------------------------------------------------------------------------------
namespace {

// Two shards + index in `d`: a/b in shard 1, c in shard 2.
void make_sharded(const fs::path& d, const std::string& stem = "model") {
  auto v = floats(6, 0.0f);
  st::write_file(d / (stem + "-00001-of-00002.safetensors"),
                 {{"a", st::DType::F32, {2}, v.data(), 8}, {"b", st::DType::F32, {1}, v.data() + 2, 4}});
  st::write_file(d / (stem + "-00002-of-00002.safetensors"), {{"c", st::DType::F32, {3}, v.data() + 3, 12}});
  nlohmann::json idx = {{"metadata", {{"total_size", 24}}},
                        {"weight_map",
                         {{"a", stem + "-00001-of-00002.safetensors"},
                          {"b", stem + "-00001-of-00002.safetensors"},
                          {"c", stem + "-00002-of-00002.safetensors"}}}};
  write_bytes(d / (stem + ".safetensors.index.json"), idx.dump(2));
}

void write_index(const fs::path& p, const nlohmann::json& weight_map) {
  write_bytes(p, nlohmann::json{{"weight_map", weight_map}}.dump());
}

}  // namespace

TEST_CASE("safetensors Checkpoint opens a file, a directory, an index and a custom stem") {
  TempDir dir;
  float x[2] = {1, 2};
  st::write_file(dir / "model.safetensors", {{"w", st::DType::F32, {2}, x, 8}});
  auto c1 = st::Checkpoint::open(dir / "model.safetensors");
  CHECK(c1.names() == std::vector<std::string>{"w"});
  CHECK(c1.source() == (dir / "model.safetensors").string());
  auto c2 = st::Checkpoint::open(dir.path);
  CHECK(c2.contains("w"));
  CHECK(c2.get("w").shape == std::vector<std::int64_t>{2});
  CHECK(has(model_error([&] { c2.get("nope"); }), "no tensor 'nope' in the checkpoint"));

  TempDir sharded;
  make_sharded(sharded.path);
  auto c3 = st::Checkpoint::open(sharded.path);
  CHECK(c3.names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(has(c3.source(), "model.safetensors.index.json"));
  CHECK(c3.get("c").nbytes == 12);
  CHECK(static_cast<const float*>(c3.get("c").data)[0] == 3.0f);
  CHECK(has(c3.get("c").file, "model-00002-of-00002.safetensors"));
  auto c4 = st::Checkpoint::open(sharded / "model.safetensors.index.json");
  CHECK(c4.all().size() == 3);

  TempDir unet;
  make_sharded(unet.path, "diffusion_pytorch_model");
  CHECK(st::Checkpoint::open(unet.path, "diffusion_pytorch_model").names().size() == 3);
  std::string msg = model_error([&] { st::Checkpoint::open(unet.path); });
  CHECK(has(msg, unet.path.string() + ": no model.safetensors or model.safetensors.index.json in this directory"));
  CHECK(has(model_error([&] { st::Checkpoint::open(unet / "missing.safetensors"); }),
            "missing.safetensors: no such file or directory"));
}

TEST_CASE("safetensors sharded index rejects a missing shard") {
  TempDir dir;
  make_sharded(dir.path);
  fs::remove(dir / "model-00002-of-00002.safetensors");
  std::string msg = model_error([&] { st::Checkpoint::open(dir.path); });
  CHECK(has(msg, "model.safetensors.index.json: weight_map.c: shard 'model-00002-of-00002.safetensors' does not exist"));
}

TEST_CASE("safetensors sharded index rejects ../ escapes and absolute shard paths") {
  TempDir outer;
  fs::create_directories(outer / "ckpt");
  float x = 1;
  st::write_file(outer / "evil.safetensors", {{"w", st::DType::F32, {1}, &x, 4}});
  write_index(outer / "ckpt" / "model.safetensors.index.json", {{"w", "../evil.safetensors"}});
  CHECK(has(model_error([&] { st::Checkpoint::open(outer / "ckpt"); }),
            "weight_map.w: shard '../evil.safetensors' contains '..'"));
  write_index(outer / "ckpt" / "model.safetensors.index.json", {{"w", (outer / "evil.safetensors").string()}});
  CHECK(has(model_error([&] { st::Checkpoint::open(outer / "ckpt"); }), "is an absolute path"));
  write_index(outer / "ckpt" / "model.safetensors.index.json", {{"w", "sub/../../evil.safetensors"}});
  CHECK(has(model_error([&] { st::Checkpoint::open(outer / "ckpt"); }), "contains '..'"));
}

TEST_CASE("safetensors sharded index rejects a symlink escaping the checkpoint directory") {
  TempDir outer;
  fs::create_directories(outer / "ckpt");
  float x = 1;
  st::write_file(outer / "evil.safetensors", {{"w", st::DType::F32, {1}, &x, 4}});
  fs::create_symlink(outer / "evil.safetensors", outer / "ckpt" / "shard.safetensors");
  write_index(outer / "ckpt" / "model.safetensors.index.json", {{"w", "shard.safetensors"}});
  std::string msg = model_error([&] { st::Checkpoint::open(outer / "ckpt"); });
  CHECK(has(msg, "outside the checkpoint directory"));
  CHECK(has(msg, "symlink escape"));
  // A symlink that stays inside the directory is fine.
  fs::create_directories(outer / "ckpt" / "real");
  st::write_file(outer / "ckpt" / "real" / "s.safetensors", {{"w", st::DType::F32, {1}, &x, 4}});
  fs::remove(outer / "ckpt" / "shard.safetensors");
  fs::create_symlink(fs::path("real") / "s.safetensors", outer / "ckpt" / "shard.safetensors");
  CHECK(st::Checkpoint::open(outer / "ckpt").contains("w"));
}

TEST_CASE("safetensors sharded index accepts the Hugging Face cache layout (snapshots -> blobs)") {
  TempDir repo;
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "snapshots" / "abc123");
  float x = 1;
  st::write_file(repo / "blobs" / "0123abcd", {{"w", st::DType::F32, {1}, &x, 4}});
  fs::create_symlink("../../blobs/0123abcd", repo / "snapshots" / "abc123" / "model-1.safetensors");
  write_index(repo / "snapshots" / "abc123" / "model.safetensors.index.json", {{"w", "model-1.safetensors"}});
  CHECK(st::Checkpoint::open(repo / "snapshots" / "abc123").contains("w"));
}

TEST_CASE("safetensors sharded index must agree with its shards") {
  TempDir dir;
  make_sharded(dir.path);
  write_index(dir / "model.safetensors.index.json",
              {{"a", "model-00001-of-00002.safetensors"},
               {"b", "model-00002-of-00002.safetensors"},  // b is in shard 1
               {"c", "model-00002-of-00002.safetensors"}});
  std::string msg = model_error([&] { st::Checkpoint::open(dir.path); });
  CHECK(has(msg, "weight_map maps tensor 'b' to 'model-00002-of-00002.safetensors', which has no such tensor"));
  write_index(dir / "model.safetensors.index.json",
              {{"a", "model-00001-of-00002.safetensors"},
               {"b", "model-00001-of-00002.safetensors"},
               {"c", "model-00002-of-00002.safetensors"},
               {"d", "model-00002-of-00002.safetensors"}});
  CHECK(has(model_error([&] { st::Checkpoint::open(dir.path); }),
            "weight_map maps tensor 'd' to 'model-00002-of-00002.safetensors', which has no such tensor"));
  write_index(dir / "model.safetensors.index.json",
              {{"a", "model-00001-of-00002.safetensors"}, {"c", "model-00002-of-00002.safetensors"}});
  CHECK(has(model_error([&] { st::Checkpoint::open(dir.path); }),
            "model-00001-of-00002.safetensors: tensor 'b' is not listed in the index's weight_map"));
}

TEST_CASE("safetensors sharded index rejects malformed index JSON") {
  TempDir dir;
  make_sharded(dir.path);
  fs::path idx = dir / "model.safetensors.index.json";
  write_bytes(idx, "{\"metadata\": {}}");
  CHECK(has(model_error([&] { st::Checkpoint::open(idx); }), "index has no 'weight_map'"));
  write_bytes(idx, "{\"weight_map\": [1]}");
  CHECK(has(model_error([&] { st::Checkpoint::open(idx); }), "weight_map is not an object"));
  write_bytes(idx, "{\"weight_map\": {\"a\": 3}}");
  CHECK(has(model_error([&] { st::Checkpoint::open(idx); }), "weight_map.a is number, not a shard file name"));
  write_bytes(idx, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
                   "\"a\": \"model-00002-of-00002.safetensors\"}}");
  CHECK(has(model_error([&] { st::Checkpoint::open(idx); }), "JSON has a duplicate key 'a' in weight_map"));
  write_bytes(idx, "{\"weight_map\": ");
  CHECK(has(model_error([&] { st::Checkpoint::open(idx); }), "not valid JSON"));
}

TEST_CASE("safetensors names Git LFS pointers in sharded checkpoints") {
  TempDir dir;
  make_sharded(dir.path);
  write_bytes(dir / "model-00002-of-00002.safetensors", kLfsPointer);
  std::string msg = model_error([&] { st::Checkpoint::open(dir.path); });
  CHECK(has(msg, "model-00002-of-00002.safetensors: this is a Git LFS pointer file, not the weights"));
  CHECK(has(msg, "git lfs pull"));
  write_bytes(dir / "model.safetensors.index.json", kLfsPointer);
  CHECK(has(model_error([&] { st::Checkpoint::open(dir.path); }),
            "model.safetensors.index.json: this is a Git LFS pointer file"));
}

TEST_CASE("safetensors opens the llava-tiny-a fixture (sharded fp16)") {
  fs::path d = lli::test::fixtures_dir() / "llava-tiny-a";  // the repo's copy of the shared fixture
  auto idx = nlohmann::json::parse(read_bytes(d / "model.safetensors.index.json"));
  auto ckpt = st::Checkpoint::open(d);
  CHECK(ckpt.all().size() == idx["weight_map"].size());
  std::set<std::string> shards;
  int n_f16 = 0;
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    REQUIRE(ckpt.contains(it.key()));
    const auto& t = ckpt.get(it.key());
    CHECK(has(t.file, it.value().get<std::string>()));
    shards.insert(t.file);
    std::size_t numel = 1;
    for (auto s : t.shape) numel *= static_cast<std::size_t>(s);
    CHECK(t.nbytes == numel * st::dtype_size(t.dtype));
    n_f16 += t.dtype == st::DType::F16;
  }
  CHECK(shards.size() == 3);
  CHECK(n_f16 > 0);
  MESSAGE("llava-tiny-a: " << ckpt.all().size() << " tensors, " << n_f16 << " F16, " << shards.size() << " shards");
}

// ---- copy residency ---------------------------------------------------------------------------

TEST_CASE("safetensors copy residency: same tensors as mmap, in 64-byte aligned anonymous memory") {
  TempDir dir;
  fs::path p = dir / "m.safetensors";
  std::vector<float> f(1000);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i) * 0.37f - 100.0f;
  std::vector<std::int32_t> ints{1, -2, 3};
  std::vector<std::uint8_t> b{0, 1, 1};
  st::write_file(p, {{"f", st::DType::F32, {10, 100}, f.data(), 4000},
                     {"i", st::DType::I32, {3}, ints.data(), 12},
                     {"b", st::DType::BOOL, {3}, b.data(), 3},
                     {"empty", st::DType::F32, {0, 4}, nullptr, 0}},
                 {{"k", "v"}});
  st::OpenOptions copy;
  copy.residency = st::Residency::copy;
  std::uint64_t last_done = 0, total_seen = 0;
  int calls = 0;
  copy.progress = [&](std::uint64_t done, std::uint64_t total) {
    CHECK(done >= last_done);
    last_done = done;
    total_seen = total;
    ++calls;
  };
  auto a = st::File::open(p);
  auto c = st::File::open(p, copy);
  CHECK(c.metadata().at("k") == "v");
  REQUIRE(a.tensors().size() == c.tensors().size());
  for (std::size_t i = 0; i < a.tensors().size(); ++i) {
    const auto &x = a.tensors()[i], &y = c.tensors()[i];
    CHECK(x.name == y.name);
    CHECK(x.dtype == y.dtype);
    CHECK(x.shape == y.shape);
    REQUIRE(x.nbytes == y.nbytes);
    if (y.nbytes) {
      CHECK(reinterpret_cast<std::uintptr_t>(y.data) % 64 == 0);
      CHECK(std::memcmp(x.data, y.data, x.nbytes) == 0);
    }
  }
  CHECK(calls >= 1);
  CHECK(last_done == 4000 + 12 + 3);
  CHECK(total_seen == last_done);
}

TEST_CASE("safetensors copy residency converts floating tensors on the way, never integers") {
  TempDir dir;
  fs::path p = dir / "m.safetensors";
  // Values that exercise rounding: halfway cases, subnormals, NaN, infinities, fp16 overflow.
  std::vector<float> f{0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 3.14159265f, -65504.0f, 65520.0f, 1e-7f,
                       6.1e-5f, 1e30f, -1e-30f, std::numeric_limits<float>::infinity(),
                       std::numeric_limits<float>::quiet_NaN(), 0.1f, 70000.0f};
  // 3 M elements: several 16 MiB read chunks (parallel readers).
  std::vector<float> big(3 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 9973) * 0.013f - 50.0f;
  std::vector<std::int64_t> ids{7, -8};
  st::write_file(p, {{"f", st::DType::F32, {16}, f.data(), f.size() * 4},
                     {"big", st::DType::F32, {static_cast<std::int64_t>(big.size())}, big.data(), big.size() * 4},
                     {"ids", st::DType::I64, {2}, ids.data(), 16}});
  for (st::DType to : {st::DType::BF16, st::DType::F16}) {
    CAPTURE(st::dtype_name(to));
    st::OpenOptions o;
    o.residency = st::Residency::copy;
    o.float_dtype = to;
    o.threads = 3;
    auto c = st::Checkpoint::open(p, "model", o);
    const auto& t = c.get("f");
    CHECK(t.dtype == to);
    CHECK(t.nbytes == f.size() * 2);
    const auto* h = static_cast<const std::uint16_t*>(t.data);
    for (std::size_t i = 0; i < f.size(); ++i) {
      const std::uint16_t want = to == st::DType::BF16 ? st::f32_to_bf16(f[i]) : st::f32_to_f16(f[i]);
      CHECK_MESSAGE(h[i] == want, "element " << i << " = " << f[i]);
    }
    const auto& tb = c.get("big");
    const auto* hb = static_cast<const std::uint16_t*>(tb.data);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < big.size(); ++i)
      bad += hb[i] != (to == st::DType::BF16 ? st::f32_to_bf16(big[i]) : st::f32_to_f16(big[i]));
    CHECK(bad == 0);
    CHECK(c.get("ids").dtype == st::DType::I64);
    CHECK(std::memcmp(c.get("ids").data, ids.data(), 16) == 0);
  }
}

TEST_CASE("dtype conversion: fp16 and bf16 rounding as IEEE round-to-nearest-even") {
  // fp16: exact values, halfway ties to even, subnormals, overflow to inf, NaN.
  CHECK(st::f32_to_f16(1.0f) == 0x3c00);
  CHECK(st::f32_to_f16(-2.0f) == 0xc000);
  CHECK(st::f32_to_f16(65504.0f) == 0x7bff);
  CHECK(st::f32_to_f16(65519.0f) == 0x7bff);
  CHECK(st::f32_to_f16(65520.0f) == 0x7c00);
  CHECK(st::f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);        // tie -> even (down)
  CHECK(st::f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);        // tie -> even (up)
  CHECK(st::f32_to_f16(0.1f) == 0x2e66);
  CHECK(st::f32_to_f16(8.940696716308594e-08f) == 0x0002);    // 1.5 x the smallest subnormal: tie -> even
  CHECK(st::f32_to_f16(6.103515625e-05f * 0.99999f) == 0x0400);  // rounds up to the smallest normal
  CHECK(st::f32_to_f16(5.960464477539063e-08f) == 0x0001);    // smallest subnormal
  CHECK(st::f32_to_f16(2.98023223876953125e-08f) == 0x0000);  // half of it: tie -> 0
  CHECK(st::f32_to_f16(6.097555160522461e-05f) == 0x03ff);    // largest subnormal
  CHECK((st::f32_to_f16(std::numeric_limits<float>::quiet_NaN()) & 0x7c00) == 0x7c00);
  CHECK((st::f32_to_f16(std::numeric_limits<float>::quiet_NaN()) & 0x03ff) != 0);
  // Every fp16 value survives fp16 -> fp32 -> fp16 (NaNs stay NaNs).
  int bad = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = st::f16_to_f32(static_cast<std::uint16_t>(h));
    const std::uint16_t back = st::f32_to_f16(f);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) bad += !((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
    else bad += back != h;
  }
  CHECK(bad == 0);
  // bf16
  CHECK(st::f32_to_bf16(1.0f) == 0x3f80);
  CHECK(st::f32_to_bf16(1.00390625f) == 0x3f80);  // tie -> even
  CHECK(st::f32_to_bf16(1.01171875f) == 0x3f82);  // tie -> even (up)
  CHECK(st::f32_to_bf16(std::numeric_limits<float>::quiet_NaN()) == 0x7fc0);
  CHECK(st::bf16_to_f32(0x3f80) == 1.0f);
  // Bulk conversion equals the scalar one (vectorized paths).
  std::vector<std::uint16_t> h(1000), out(1000);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint16_t>(i * 61 + 7);
  st::convert_floats(h.data(), st::DType::F16, out.data(), st::DType::BF16, h.size());
  int diff = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const float f = st::f16_to_f32(h[i]);
    diff += f == f ? out[i] != st::f32_to_bf16(f) : (out[i] & 0x7f80) != 0x7f80;
  }
  CHECK(diff == 0);
}
