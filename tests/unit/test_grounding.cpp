// LLaVA grounding helpers: the training question, the answer parser, the padded-square mapping.
#include <doctest/doctest.h>

#include "lli/error.h"
#include "pipelines/llava_grounding.h"

using lli::pipelines::llava_grounding_question;
using lli::pipelines::llava_square_box_to_pixels;
using lli::pipelines::parse_llava_box;

TEST_CASE("llava grounding: the question is LLaVA-1.5's referring-expression prompt") {
  const std::string q = "Please provide the bounding box coordinate of the region this sentence describes: ";
  CHECK(llava_grounding_question("the man on the left") == q + "the man on the left.");
  CHECK(llava_grounding_question("  a\n\tball   ") == q + "a ball.");
  CHECK(llava_grounding_question("Bathroom floor is dark tiles.") == q + "Bathroom floor is dark tiles.");
  CHECK(llava_grounding_question("which one?") == q + "which one?");
  CHECK_THROWS_AS(llava_grounding_question(" \n "), lli::UsageError);
  CHECK_THROWS_AS(llava_grounding_question(""), lli::UsageError);
}

TEST_CASE("llava grounding: the first valid box of the answer is parsed") {
  auto b = parse_llava_box("[0.21, 0.92, 0.36, 1.0]");
  REQUIRE(b);
  CHECK((*b)[0] == doctest::Approx(0.21));
  CHECK((*b)[1] == doctest::Approx(0.92));
  CHECK((*b)[2] == doctest::Approx(0.36));
  CHECK((*b)[3] == doctest::Approx(1.0));
  b = parse_llava_box("The ball is at [0.1,0.2,0.3,0.4].");
  REQUIRE(b);
  CHECK((*b)[3] == doctest::Approx(0.4));
  b = parse_llava_box("[.5, .25, 1, 1.]");
  REQUIRE(b);
  CHECK((*b)[0] == doctest::Approx(0.5));
  CHECK((*b)[2] == doctest::Approx(1.0));
  // Corners out of order, numbers outside [0, 1], three numbers: skipped; a later valid box wins.
  b = parse_llava_box("[0.5, 0.2, 0.3, 0.4] or [1.2, 0, 0.3, 0.4] or [0.1, 0.2, 0.3] then [0.05, 0.1, 0.6, 0.7]");
  REQUIRE(b);
  CHECK((*b)[0] == doctest::Approx(0.05));
  CHECK((*b)[3] == doctest::Approx(0.7));
  CHECK_FALSE(parse_llava_box("A man playing football."));
  CHECK_FALSE(parse_llava_box("[-0.1, 0.2, 0.3, 0.4]"));
  CHECK_FALSE(parse_llava_box("[0.1, 0.2, 0.1, 0.4]"));  // zero width
  CHECK_FALSE(parse_llava_box("[0.1 0.2 0.3 0.4]"));
  CHECK_FALSE(parse_llava_box("[0.1, 0.2, 0.3, 0.4"));
  CHECK_FALSE(parse_llava_box("[[[[["));
  CHECK_FALSE(parse_llava_box(""));
}

TEST_CASE("llava grounding: boxes on the centred padded square map back to photo pixels") {
  // messi5.jpg is 548 x 342: side 548, the photo pasted 103 rows down ((548 - 342) / 2).
  auto p = llava_square_box_to_pixels({0.0, 103.0 / 548, 1.0, 445.0 / 548}, 548, 342);
  CHECK(p.x0 == doctest::Approx(0.0));
  CHECK(p.y0 == doctest::Approx(0.0).epsilon(1e-9));
  CHECK(p.x1 == doctest::Approx(548.0));
  CHECK(p.y1 == doctest::Approx(342.0));
  p = llava_square_box_to_pixels({0.25, 0.5, 0.5, 0.75}, 548, 342);
  CHECK(p.x0 == doctest::Approx(137.0));
  CHECK(p.y0 == doctest::Approx(274.0 - 103.0));
  CHECK(p.x1 == doctest::Approx(274.0));
  CHECK(p.y1 == doctest::Approx(411.0 - 103.0));
  CHECK_FALSE(p.empty());
  // Entirely in the top padding: empty after clipping.
  CHECK(llava_square_box_to_pixels({0.1, 0.0, 0.9, 0.1}, 548, 342).empty());
  // A tall photo with an odd difference: (6 - 3) / 2 = 1 column of padding on the left.
  p = llava_square_box_to_pixels({0.0, 0.0, 1.0, 1.0}, 3, 6);
  CHECK(p.x0 == doctest::Approx(0.0));
  CHECK(p.x1 == doctest::Approx(3.0));
  CHECK(p.y1 == doctest::Approx(6.0));
  p = llava_square_box_to_pixels({0.5, 0.0, 1.0, 1.0}, 3, 6);
  CHECK(p.x0 == doctest::Approx(2.0));
  CHECK_THROWS_AS(llava_square_box_to_pixels({0, 0, 1, 1}, 0, 5), lli::UsageError);
}
