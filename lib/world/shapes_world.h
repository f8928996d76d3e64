// The "shapes world": seeded synthetic scenes of coloured shapes with exact ground truth, the data
// lli's demo models are trained and tested on (issue 13). Torch-free (lli_base).
//
// A scene is a background (plain, gradient, noise texture or stripes) with 1-4 objects (circle,
// square, triangle, star, ring, diamond, cross) in one of 7 colours, drawn back to front; objects
// may overlap but each keeps at least kMinVisible of its area visible, and each differs clearly in
// colour from the background under it. Ground truth per object:
// the visible mask, its box, kind, colour and centre; the scene keeps its background alone (what a
// removal should restore). Captions and question/answer pairs are derived from the ground truth.
//
// Determinism: everything comes from one 64-bit seed through lli's own generator (splitmix64) and
// integer/float arithmetic, not from <random>'s distributions (whose results differ between
// standard libraries), so a seed gives the same scene on every machine.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lli::world {

enum class Shape { circle, square, triangle, star, ring, diamond, cross };
enum class Colour { red, green, blue, yellow, purple, orange, white };
enum class Background { plain, gradient, noise, stripes };

constexpr int kShapeCount = 7;
constexpr int kColourCount = 7;
constexpr int kBackgroundCount = 4;
constexpr double kMinVisible = 0.6;  // each object keeps at least this share of its pixels visible

const char* shape_name(Shape s);          // "circle", "square", ...
const char* shape_plural(Shape s);        // "circles", "squares", ...
const char* colour_name(Colour c);        // "red", ...
const char* background_name(Background b);
cv::Vec3b colour_bgr(Colour c);            // the pure colour drawn (BGR)

struct Object {
  Shape shape = Shape::circle;
  Colour colour = Colour::red;
  cv::Point2d centre;  // pixels
  double radius = 0;   // half the side of the shape's square footprint, pixels
  cv::Mat mask;        // CV_8UC1 of the image size, 255 where the object is visible
  cv::Rect box;        // bounding box of the visible mask
  std::string name() const;  // "red circle"
};

struct Scene {
  cv::Mat image;       // CV_8UC3 BGR
  cv::Mat background;  // the same scene without any object
  Background bg = Background::plain;
  std::vector<Object> objects;  // back to front
};

struct SceneConfig {
  int min_side = 64, max_side = 256;  // image width and height in this range, within 2:1 of each other
  int min_objects = 1, max_objects = 4;
  double min_radius_frac = 0.08, max_radius_frac = 0.22;  // of the shorter side
  bool occlusion = true;  // allow overlaps (each object keeps kMinVisible visible)
  int backgrounds = kBackgroundCount;  // draw the first N background kinds (2: plain and gradient only)
  int background = -1;  // >= 0: every scene gets this Background (still drawn first, so the rest of the scene's draws follow)
};

// The full (unoccluded) mask of shape `s` centred at `c` (pixels) with footprint radius `r` (half
// the side of its square footprint), drawn into a CV_8UC1 image of `size` (255 inside). Shapes are
// axis-aligned: a triangle points up, a diamond is taller than wide.
cv::Mat shape_mask(Shape s, cv::Point2d c, double r, cv::Size size);

// The scene of `seed`. UsageError for an invalid config.
Scene make_scene(std::uint64_t seed, const SceneConfig& cfg = {});

// "a red circle", "a red circle left of a blue square", "a red circle, a blue square and a green
// star, from left to right".
std::string caption(const Scene& s);

enum class QuestionKind { colour, count, kind, position, exists };
const char* question_kind_name(QuestionKind k);

struct QA {
  QuestionKind kind;
  std::string question;
  std::string answer;  // exact expected answer: "red", "2", "circle", "red circle", "yes"/"no"
};

// The questions a scene answers unambiguously, each kind at most once, chosen by `seed`:
// colour ("What colour is the star?", a kind present once), count ("How many circles are there?",
// any kind, 0 included), kind ("What shape is the red object?", a colour present once), position
// ("What is left of the square?": a kind present once with exactly one object clearly left of it,
// whose colour and kind no other object has, answered "<colour> <shape>") and exists ("Is there a
// triangle?").
std::vector<QA> questions(const Scene& s, std::uint64_t seed);

// The count and exists questions about one kind ("How many stars are there?" -> "0", "1", ...;
// "Is there a star?" -> "yes" / "no"), as questions() asks them.
QA count_question(const Scene& s, Shape shape);
QA exists_question(const Scene& s, Shape shape);

// Seeded generator: splitmix64 (public domain algorithm by S. Vigna).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  double uniform();                   // [0, 1)
  double uniform(double a, double b);  // [a, b)
  int below(int n);                   // [0, n), n > 0

 private:
  std::uint64_t state_;
};

}  // namespace lli::world
