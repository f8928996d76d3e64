// The shapes world (issue 13's synthetic data): determinism, ground truth consistent with the
// pixels, captions and questions consistent with the ground truth.
#include <doctest/doctest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <map>

#include "lli/error.h"
#include "world/shapes_world.h"

namespace w = lli::world;

namespace {
bool same_mat(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}
}  // namespace

TEST_CASE("shapes world: a seed gives the same scene, another seed another one") {
  const auto a = w::make_scene(42), b = w::make_scene(42), c = w::make_scene(43);
  CHECK(same_mat(a.image, b.image));
  CHECK(same_mat(a.background, b.background));
  REQUIRE(a.objects.size() == b.objects.size());
  for (std::size_t i = 0; i < a.objects.size(); ++i) {
    CHECK(a.objects[i].name() == b.objects[i].name());
    CHECK(same_mat(a.objects[i].mask, b.objects[i].mask));
  }
  CHECK_FALSE(same_mat(a.image, c.image));
  w::Rng r1(7), r2(7);
  for (int i = 0; i < 100; ++i) CHECK(r1.next() == r2.next());
  CHECK(w::Rng(0).next() == 0xe220a8397b1dcdafull);  // splitmix64's first output for seed 0
}

TEST_CASE("shapes world: ground truth matches the pixels over 300 scenes") {
  std::map<std::string, int> shapes, colours, backgrounds;
  std::array<int, 5> n_objects{};
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    CAPTURE(seed);
    const auto s = w::make_scene(seed);
    REQUIRE(s.image.type() == CV_8UC3);
    CHECK(s.image.cols >= 64);
    CHECK(s.image.cols <= 256);
    CHECK(s.image.rows >= 64);
    CHECK(s.image.rows <= 256);
    REQUIRE(!s.objects.empty());
    REQUIRE(s.objects.size() <= 4);
    ++n_objects[s.objects.size()];
    ++backgrounds[w::background_name(s.bg)];
    cv::Mat any = cv::Mat::zeros(s.image.size(), CV_8UC1);
    for (const auto& o : s.objects) {
      ++shapes[w::shape_name(o.shape)];
      ++colours[w::colour_name(o.colour)];
      REQUIRE(o.mask.size() == s.image.size());
      CHECK(cv::countNonZero(o.mask) > 0);
      CHECK(o.box == cv::boundingRect(o.mask));
      cv::Mat overlap;
      cv::bitwise_and(any, o.mask, overlap);
      CHECK(cv::countNonZero(overlap) == 0);  // visible masks are disjoint
      cv::bitwise_or(any, o.mask, any);
      // Every visible pixel has the object's colour.
      cv::Mat colour(s.image.size(), CV_8UC3, cv::Scalar(w::colour_bgr(o.colour)[0], w::colour_bgr(o.colour)[1], w::colour_bgr(o.colour)[2]));
      cv::Mat diff;
      cv::absdiff(s.image, colour, diff);
      cv::Mat d1;
      cv::transform(diff, d1, cv::Matx13f(1, 1, 1));
      CHECK(cv::countNonZero(d1 & (o.mask > 0)) == 0);
    }
    // Outside the objects the image is the background.
    cv::Mat diff;
    cv::absdiff(s.image, s.background, diff);
    cv::Mat d1;
    cv::transform(diff, d1, cv::Matx13f(1, 1, 1));
    cv::Mat outside = any == 0;
    CHECK(cv::countNonZero(d1 & outside) == 0);
  }
  MESSAGE("objects per scene 1-4: " << n_objects[1] << " " << n_objects[2] << " " << n_objects[3] << " " << n_objects[4]);
  CHECK(shapes.size() == static_cast<std::size_t>(w::kShapeCount));
  CHECK(colours.size() == static_cast<std::size_t>(w::kColourCount));
  CHECK(backgrounds.size() == static_cast<std::size_t>(w::kBackgroundCount));
  for (int k = 1; k <= 4; ++k) CHECK(n_objects[static_cast<std::size_t>(k)] > 30);
}

TEST_CASE("shapes world: captions and questions agree with the ground truth") {
  std::map<std::string, int> kinds;
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    CAPTURE(seed);
    const auto s = w::make_scene(seed);
    const std::string cap = w::caption(s);
    for (const auto& o : s.objects) CHECK(cap.find(o.name()) != std::string::npos);
    if (s.objects.size() == 2) {
      const auto& l = s.objects[0].centre.x <= s.objects[1].centre.x ? s.objects[0] : s.objects[1];
      CHECK(cap.find(l.name() + " left of ") != std::string::npos);
    }
    for (const auto& q : w::questions(s, seed)) {
      CAPTURE(q.question);
      ++kinds[w::question_kind_name(q.kind)];
      auto count = [&](const std::string& shape) {
        int n = 0;
        for (const auto& o : s.objects) n += shape == w::shape_name(o.shape);
        return n;
      };
      switch (q.kind) {
        case w::QuestionKind::count: {
          bool found = false;
          for (int k = 0; k < w::kShapeCount; ++k) {
            const auto sh = static_cast<w::Shape>(k);
            if (q.question == std::string("How many ") + w::shape_plural(sh) + " are there?") {
              CHECK(q.answer == std::to_string(count(w::shape_name(sh))));
              found = true;
            }
          }
          CHECK(found);
          break;
        }
        case w::QuestionKind::exists:
          for (int k = 0; k < w::kShapeCount; ++k) {
            const auto sh = static_cast<w::Shape>(k);
            if (q.question == std::string("Is there a ") + w::shape_name(sh) + "?")
              CHECK(q.answer == (count(w::shape_name(sh)) ? "yes" : "no"));
          }
          break;
        case w::QuestionKind::colour: {
          int matches = 0;
          for (const auto& o : s.objects)
            if (q.question == std::string("What colour is the ") + w::shape_name(o.shape) + "?") {
              ++matches;
              CHECK(q.answer == w::colour_name(o.colour));
            }
          CHECK(matches == 1);
          break;
        }
        case w::QuestionKind::kind: {
          int matches = 0;
          for (const auto& o : s.objects)
            if (q.question == std::string("What shape is the ") + w::colour_name(o.colour) + " object?") {
              ++matches;
              CHECK(q.answer == w::shape_name(o.shape));
            }
          CHECK(matches == 1);
          break;
        }
        case w::QuestionKind::position: {
          const w::Object* ref = nullptr;
          for (const auto& o : s.objects)
            if (q.question == std::string("What is left of the ") + w::shape_name(o.shape) + "?") ref = &o;
          REQUIRE(ref);
          const w::Object* ans = nullptr;
          for (const auto& o : s.objects)
            if (o.name() == q.answer) ans = &o;
          REQUIRE(ans);
          CHECK(ans->centre.x < ref->centre.x);
          break;
        }
      }
    }
  }
  // The count and exists questions about a kind the scene has (demo-llava's training asks them too).
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    const auto s = w::make_scene(seed);
    for (const auto& o : s.objects) {
      const auto e = w::exists_question(s, o.shape), c = w::count_question(s, o.shape);
      CHECK(e.kind == w::QuestionKind::exists);
      CHECK(e.question == std::string("Is there a ") + w::shape_name(o.shape) + "?");
      CHECK(e.answer == "yes");
      CHECK(c.kind == w::QuestionKind::count);
      CHECK(c.question == std::string("How many ") + w::shape_plural(o.shape) + " are there?");
      int n = 0;
      for (const auto& p : s.objects) n += p.shape == o.shape;
      CHECK(c.answer == std::to_string(n));
    }
  }
  MESSAGE("questions per kind over 300 scenes: colour " << kinds["colour"] << ", count " << kinds["count"] << ", kind "
                                                        << kinds["kind"] << ", position " << kinds["position"]
                                                        << ", exists " << kinds["exists"]);
  CHECK(kinds["count"] == 300);
  CHECK(kinds["exists"] == 300);
  CHECK(kinds["colour"] > 150);
  CHECK(kinds["kind"] > 150);
  CHECK(kinds["position"] > 30);
  CHECK(w::caption(w::make_scene(5)).rfind("a", 0) == 0);
}

TEST_CASE("shapes world: invalid configs are refused") {
  w::SceneConfig c;
  c.max_objects = 0;
  CHECK_THROWS_AS(w::make_scene(1, c), lli::UsageError);
  c = {};
  c.min_side = 300;
  CHECK_THROWS_AS(w::make_scene(1, c), lli::UsageError);
  c = {};
  c.max_radius_frac = 0.7;
  CHECK_THROWS_AS(w::make_scene(1, c), lli::UsageError);
}
