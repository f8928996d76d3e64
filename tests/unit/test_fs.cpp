#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

TEST_CASE("fs: temporary files are named .lli-tmp-<pid>-<n>-<name>, never open what is at that name") {
  TempDir t;
  write_file_atomic((t / "victim.txt").string(), "victim");
  // The next names this process will use follow from its pid; a link planted at each is skipped.
  AtomicFile probe(t / "x.bin");
  const std::string name = probe.temp_path().filename().string();
  const std::string prefix = ".lli-tmp-" + std::to_string(::getpid()) + "-";
  REQUIRE(name.rfind(prefix, 0) == 0);
  CHECK(name.size() > prefix.size() + 2);
  const unsigned n = static_cast<unsigned>(std::stoul(name.substr(prefix.size())));
  for (unsigned k = n + 1; k < n + 4; ++k)
    fs::create_symlink(t / "victim.txt", t / (prefix + std::to_string(k) + "-out.txt"));
  {
    AtomicFile f(t / "out.txt");
    CHECK(f.temp_path().filename().string() == prefix + std::to_string(n + 4) + "-out.txt");
    f.write("new");
    f.commit();
  }
  CHECK(slurp(t / "victim.txt") == "victim");
  CHECK(slurp(t / "out.txt") == "new");
  // Long target names are cut so that the temporary name stays a valid file name.
  AtomicFile long_name(t / std::string(250, 'a'));
  CHECK(long_name.temp_path().filename().string().size() < 255);
}

TEST_CASE("fs: remove_stale_temporaries removes the files of dead processes only, links without following") {
  TempDir t;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);  // `child` is now a pid without a process
  write_file_atomic((t / "victim.txt").string(), "victim");
  const std::string dead = ".lli-tmp-" + std::to_string(child) + "-0-out.png";
  const std::string dead_link = ".lli-tmp-" + std::to_string(child) + "-1-out.png";
  const std::string alive = ".lli-tmp-" + std::to_string(::getpid()) + "-99-out.png";
  const std::string alive_other = ".lli-tmp-1-0-out.png";  // pid 1 exists
  for (const auto& n : {dead, alive, alive_other, std::string(".lli-tmp-x-0-out.png"), std::string("keep.png")})
    std::ofstream(t / n) << "x";
  fs::create_symlink(t / "victim.txt", t / dead_link);
  CHECK(remove_stale_temporaries(t.path) == 2);
  CHECK_FALSE(fs::exists(t / dead));
  CHECK_FALSE(fs::is_symlink(t / dead_link));
  CHECK(slurp(t / "victim.txt") == "victim");
  for (const auto& n : {alive, alive_other, std::string(".lli-tmp-x-0-out.png"), std::string("keep.png")})
    CHECK_MESSAGE(fs::exists(t / n), n);
}
