#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "lli/error.h"
#include "lli/fs.h"
#include "test_util.h"

using namespace lli;
using lli::test::TempDir;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
int count_files(const fs::path& dir) {
  int n = 0;
  for (auto& e : fs::directory_iterator(dir)) (void)e, ++n;
  return n;
}
}  // namespace

TEST_CASE("fs: AtomicFile commit renames the temp file over the target") {
  TempDir t;
  {
    AtomicFile f(t / "out.bin");
    f.write("hello ");
    f.write("world");
    CHECK(fs::exists(f.temp_path()));
    CHECK_FALSE(fs::exists(t / "out.bin"));
    f.commit();
  }
  CHECK(slurp(t / "out.bin") == "hello world");
  CHECK(count_files(t.path) == 1);
}

TEST_CASE("fs: AtomicFile without commit leaves neither the target nor a temp file") {
  TempDir t;
  std::ofstream(t / "keep.txt") << "old";
  {
    AtomicFile f(t / "keep.txt");
    f.write("new contents");
  }
  CHECK(slurp(t / "keep.txt") == "old");
  CHECK(count_files(t.path) == 1);
}

TEST_CASE("fs: an exception while writing leaves the old file intact") {
  TempDir t;
  std::ofstream(t / "a.txt") << "v1";
  try {
    AtomicFile f(t / "a.txt");
    f.write("partial");
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK(slurp(t / "a.txt") == "v1");
  CHECK(count_files(t.path) == 1);
}

TEST_CASE("fs: AtomicFile in a missing directory is an input error naming the path") {
  TempDir t;
  try {
    AtomicFile f(t / "nope" / "x.png");
    FAIL("expected an error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("does not exist") != std::string::npos);
    CHECK(e.code() == ExitCode::bad_input);
  }
}

TEST_CASE("fs: commit after an interrupt throws InterruptedError and writes nothing") {
  TempDir t;
  {
    AtomicFile f(t / "x.txt");
    f.write("data");
    request_interrupt();
    CHECK_THROWS_AS(f.commit(), InterruptedError);
    reset_interrupt_for_tests();
  }
  CHECK_FALSE(fs::exists(t / "x.txt"));
  CHECK(count_files(t.path) == 0);
  CHECK_NOTHROW(check_interrupted());
}

TEST_CASE("fs: write_file_atomic and read_file round trip, size cap") {
  TempDir t;
  write_file_atomic((t / "b.bin").string(), std::string("\0\1\2abc", 6));
  CHECK(read_file((t / "b.bin").string()) == std::string("\0\1\2abc", 6));
  CHECK_THROWS_AS(read_file((t / "b.bin").string(), 3), InputError);
  CHECK_THROWS_AS(read_file((t / "missing").string()), InputError);
  CHECK_THROWS_AS(read_file(t.path.string()), InputError);
}

TEST_CASE("fs: read_file reads a pipe (a FIFO, as /dev/fd/N of a shell's <(...)) with the same size cap") {
  TempDir t;
  const auto fifo = (t / "p").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << std::string(100000, 'x'); });
  CHECK(read_file(fifo).size() == 100000);  // was: "file is 18446744073709551615 bytes"
  writer.join();
  // 5000 bytes fit the pipe buffer: the writer is done before the reader gives up (no SIGPIPE)
  std::thread writer2([&] { std::ofstream(fifo, std::ios::binary) << std::string(5000, 'y'); });
  std::string msg;
  try {
    read_file(fifo, 1000);
  } catch (const InputError& e) {
    msg = e.what();
  }
  writer2.join();
  CHECK(msg.find("more than the limit of 1000") != std::string::npos);
}

TEST_CASE("fs: check_not_overwriting refuses to write over an input") {
  TempDir t;
  std::ofstream(t / "in.png") << "x";
  CHECK_THROWS_AS(check_not_overwriting(t / "in.png", {t / "in.png"}, false), UsageError);
  CHECK_THROWS_AS(check_not_overwriting(t.path / "." / "in.png", {t / "in.png"}, false), UsageError);
  CHECK_NOTHROW(check_not_overwriting(t / "in.png", {t / "in.png"}, true));
  CHECK_NOTHROW(check_not_overwriting(t / "out.png", {t / "in.png"}, false));
  CHECK_NOTHROW(check_not_overwriting("-", {t / "in.png"}, false));
}

TEST_CASE("fs: sha256 matches the FIPS 180-4 test vectors") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  TempDir t;
  std::string million(1000000, 'a');
  write_file_atomic((t / "a").string(), million);
  CHECK(sha256_file(t / "a") == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
