// The shapes world (see shapes_world.h).
#include "world/shapes_world.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>

#include "lli/error.h"

namespace lli::world {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMinContrast = 120;  // L1 distance (0-765) of an object's colour from the background under it
constexpr int kShift = 4;  // fractional bits of the drawing coordinates
constexpr double kScale = 1 << kShift;

cv::Point fixed(double x, double y) { return {static_cast<int>(std::lround(x * kScale)), static_cast<int>(std::lround(y * kScale))}; }

void fill_polygon(cv::Mat& m, const std::vector<cv::Point2d>& pts) {
  std::vector<cv::Point> p;
  p.reserve(pts.size());
  for (const auto& q : pts) p.push_back(fixed(q.x, q.y));
  cv::fillPoly(m, std::vector<std::vector<cv::Point>>{p}, cv::Scalar(255), cv::LINE_8, kShift);
}

}  // namespace

// The full (unoccluded) mask of a shape centred at c with footprint radius r.
cv::Mat shape_mask(Shape s, cv::Point2d c, double r, cv::Size size) {
  cv::Mat m = cv::Mat::zeros(size, CV_8UC1);
  switch (s) {
    case Shape::circle:
      cv::circle(m, fixed(c.x, c.y), static_cast<int>(std::lround(r * kScale)), cv::Scalar(255), cv::FILLED, cv::LINE_8, kShift);
      break;
    case Shape::ring:
      cv::circle(m, fixed(c.x, c.y), static_cast<int>(std::lround(r * kScale)), cv::Scalar(255), cv::FILLED, cv::LINE_8, kShift);
      cv::circle(m, fixed(c.x, c.y), static_cast<int>(std::lround(0.55 * r * kScale)), cv::Scalar(0), cv::FILLED, cv::LINE_8,
                 kShift);
      break;
    case Shape::square:
      fill_polygon(m, {{c.x - r, c.y - r}, {c.x + r, c.y - r}, {c.x + r, c.y + r}, {c.x - r, c.y + r}});
      break;
    case Shape::triangle:
      fill_polygon(m, {{c.x, c.y - r}, {c.x + r, c.y + 0.8 * r}, {c.x - r, c.y + 0.8 * r}});
      break;
    case Shape::diamond:  // a rhombus taller than wide, so it is not a turned square
      fill_polygon(m, {{c.x, c.y - r}, {c.x + 0.65 * r, c.y}, {c.x, c.y + r}, {c.x - 0.65 * r, c.y}});
      break;
    case Shape::star: {
      std::vector<cv::Point2d> p;
      for (int i = 0; i < 10; ++i) {
        const double a = -kPi / 2 + i * kPi / 5, rr = i % 2 ? 0.45 * r : r;
        p.push_back({c.x + rr * std::cos(a), c.y + rr * std::sin(a)});
      }
      fill_polygon(m, p);
      break;
    }
    case Shape::cross: {
      const double t = 0.33 * r;
      fill_polygon(m, {{c.x - t, c.y - r}, {c.x + t, c.y - r}, {c.x + t, c.y + r}, {c.x - t, c.y + r}});
      fill_polygon(m, {{c.x - r, c.y - t}, {c.x + r, c.y - t}, {c.x + r, c.y + t}, {c.x - r, c.y + t}});
      break;
    }
  }
  return m;
}

namespace {

cv::Vec3b random_muted(Rng& rng) {
  return {static_cast<uchar>(30 + rng.below(161)), static_cast<uchar>(30 + rng.below(161)),
          static_cast<uchar>(30 + rng.below(161))};
}

cv::Mat make_background(Background b, cv::Size size, Rng& rng) {
  cv::Mat img(size, CV_8UC3);
  const cv::Vec3b c0 = random_muted(rng), c1 = random_muted(rng);
  switch (b) {
    case Background::plain:
      img.setTo(cv::Scalar(c0[0], c0[1], c0[2]));
      break;
    case Background::gradient: {
      const double a = rng.uniform(0, 2 * kPi), dx = std::cos(a), dy = std::sin(a);
      const double lo = std::min({0.0, dx * (size.width - 1), dy * (size.height - 1), dx * (size.width - 1) + dy * (size.height - 1)});
      const double hi = std::max({0.0, dx * (size.width - 1), dy * (size.height - 1), dx * (size.width - 1) + dy * (size.height - 1)});
      for (int y = 0; y < size.height; ++y)
        for (int x = 0; x < size.width; ++x) {
          const double t = hi > lo ? (dx * x + dy * y - lo) / (hi - lo) : 0.0;
          auto& p = img.at<cv::Vec3b>(y, x);
          for (int k = 0; k < 3; ++k) p[k] = static_cast<uchar>(std::lround(c0[k] + t * (c1[k] - c0[k])));
        }
      break;
    }
    case Background::noise: {  // a coarse random grid upscaled smoothly, plus fine grain
      const int g = 3 + rng.below(6);
      cv::Mat coarse(g, g, CV_8UC3);
      for (int y = 0; y < g; ++y)
        for (int x = 0; x < g; ++x) {
          const double t = rng.uniform();
          auto& p = coarse.at<cv::Vec3b>(y, x);
          for (int k = 0; k < 3; ++k) p[k] = static_cast<uchar>(std::lround(c0[k] + t * (c1[k] - c0[k])));
        }
      cv::resize(coarse, img, size, 0, 0, cv::INTER_LINEAR);
      for (int y = 0; y < size.height; ++y)
        for (int x = 0; x < size.width; ++x) {
          auto& p = img.at<cv::Vec3b>(y, x);
          const int n = rng.below(21) - 10;
          for (int k = 0; k < 3; ++k) p[k] = cv::saturate_cast<uchar>(p[k] + n);
        }
      break;
    }
    case Background::stripes: {
      const int w = 4 + rng.below(13), dir = rng.below(3);  // horizontal, vertical, diagonal
      for (int y = 0; y < size.height; ++y)
        for (int x = 0; x < size.width; ++x) {
          const int u = dir == 0 ? y : dir == 1 ? x : x + y;
          img.at<cv::Vec3b>(y, x) = (u / w) % 2 ? c1 : c0;
        }
      break;
    }
  }
  return img;
}

std::string with_article(const std::string& noun) {
  const char c = noun.empty() ? 'x' : noun[0];
  const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
  return (vowel ? "an " : "a ") + noun;
}

}  // namespace

std::uint64_t Rng::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double Rng::uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
double Rng::uniform(double a, double b) { return a + (b - a) * uniform(); }
int Rng::below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }

const char* shape_name(Shape s) {
  static const char* n[] = {"circle", "square", "triangle", "star", "ring", "diamond", "cross"};
  return n[static_cast<int>(s)];
}
const char* shape_plural(Shape s) {
  static const char* n[] = {"circles", "squares", "triangles", "stars", "rings", "diamonds", "crosses"};
  return n[static_cast<int>(s)];
}
const char* colour_name(Colour c) {
  static const char* n[] = {"red", "green", "blue", "yellow", "purple", "orange", "white"};
  return n[static_cast<int>(c)];
}
const char* background_name(Background b) {
  static const char* n[] = {"plain", "gradient", "noise", "stripes"};
  return n[static_cast<int>(b)];
}
cv::Vec3b colour_bgr(Colour c) {
  static const cv::Vec3b v[] = {{30, 30, 220}, {40, 180, 40}, {220, 60, 30}, {30, 220, 230},
                                {170, 40, 150}, {20, 140, 250}, {250, 250, 250}};
  return v[static_cast<int>(c)];
}
const char* question_kind_name(QuestionKind k) {
  static const char* n[] = {"colour", "count", "kind", "position", "exists"};
  return n[static_cast<int>(k)];
}

std::string Object::name() const { return std::string(colour_name(colour)) + " " + shape_name(shape); }

Scene make_scene(std::uint64_t seed, const SceneConfig& cfg) {
  if (cfg.min_side < 16 || cfg.max_side < cfg.min_side || cfg.min_objects < 1 || cfg.max_objects < cfg.min_objects ||
      !(cfg.min_radius_frac > 0) || cfg.max_radius_frac < cfg.min_radius_frac || cfg.max_radius_frac > 0.5 ||
      cfg.backgrounds < 1 || cfg.backgrounds > kBackgroundCount || cfg.background >= kBackgroundCount)
    throw UsageError("shapes world: invalid scene config");
  Rng rng(seed);
  Scene s;
  // Width in [min_side, max_side], height too but within 2:1 of the width.
  const int width = cfg.min_side + rng.below(cfg.max_side - cfg.min_side + 1);
  const int h_lo = std::max(cfg.min_side, (width + 1) / 2), h_hi = std::min(cfg.max_side, 2 * width);
  const cv::Size size(width, h_lo + rng.below(h_hi - h_lo + 1));
  const int drawn = rng.below(cfg.backgrounds);
  s.bg = static_cast<Background>(cfg.background >= 0 ? cfg.background : drawn);
  s.background = make_background(s.bg, size, rng);
  const int n = cfg.min_objects + rng.below(cfg.max_objects - cfg.min_objects + 1);
  const double short_side = std::min(size.width, size.height);
  std::vector<cv::Mat> full;  // unoccluded masks, back to front
  std::vector<int> full_area;
  for (int i = 0; i < n; ++i) {
    for (int attempt = 0; attempt < 60; ++attempt) {
      Object o;
      o.shape = static_cast<Shape>(rng.below(kShapeCount));
      o.colour = static_cast<Colour>(rng.below(kColourCount));
      o.radius = short_side * rng.uniform(cfg.min_radius_frac, cfg.max_radius_frac);
      o.centre = {rng.uniform(o.radius + 1, size.width - o.radius - 1), rng.uniform(o.radius + 1, size.height - o.radius - 1)};
      cv::Mat m = shape_mask(o.shape, o.centre, o.radius, size);
      const int area = cv::countNonZero(m);
      if (area < 12) continue;
      // Visible against the background: the colour differs from the background's mean under it.
      const cv::Scalar under = cv::mean(s.background, m);
      const cv::Vec3b col = colour_bgr(o.colour);
      if (std::abs(col[0] - under[0]) + std::abs(col[1] - under[1]) + std::abs(col[2] - under[2]) < kMinContrast) continue;
      // Every object below must keep kMinVisible of itself (none may be hidden by overlaps when
      // occlusion is off).
      bool ok = true;
      cv::Mat above = m.clone();
      for (int j = static_cast<int>(full.size()) - 1; j >= 0 && ok; --j) {
        cv::Mat hidden;
        cv::bitwise_and(full[static_cast<std::size_t>(j)], above, hidden);
        const int h = cv::countNonZero(hidden);
        if (!cfg.occlusion ? h > 0 : full_area[static_cast<std::size_t>(j)] - h < kMinVisible * full_area[static_cast<std::size_t>(j)])
          ok = false;
        cv::bitwise_or(above, full[static_cast<std::size_t>(j)], above);
      }
      if (!ok) continue;
      full.push_back(m);
      full_area.push_back(area);
      s.objects.push_back(std::move(o));
      break;
    }
  }
  // Paint back to front; each visible mask = its full mask minus everything in front of it.
  s.image = s.background.clone();
  cv::Mat front = cv::Mat::zeros(size, CV_8UC1);
  for (int i = static_cast<int>(s.objects.size()) - 1; i >= 0; --i) {
    auto& o = s.objects[static_cast<std::size_t>(i)];
    cv::Mat not_front;
    cv::bitwise_not(front, not_front);
    cv::bitwise_and(full[static_cast<std::size_t>(i)], not_front, o.mask);
    o.box = cv::boundingRect(o.mask);
    cv::bitwise_or(front, full[static_cast<std::size_t>(i)], front);
  }
  for (const auto& o : s.objects) {
    const cv::Vec3b c = colour_bgr(o.colour);
    s.image.setTo(cv::Scalar(c[0], c[1], c[2]), o.mask);
  }
  return s;
}

std::string caption(const Scene& s) {
  std::vector<const Object*> o;
  for (const auto& x : s.objects) o.push_back(&x);
  std::stable_sort(o.begin(), o.end(), [](const Object* a, const Object* b) { return a->centre.x < b->centre.x; });
  if (o.empty()) return "an empty " + std::string(background_name(s.bg)) + " background";
  if (o.size() == 1) return with_article(o[0]->name());
  if (o.size() == 2) return with_article(o[0]->name()) + " left of " + with_article(o[1]->name());
  std::string c;
  for (std::size_t i = 0; i < o.size(); ++i) {
    if (i) c += i + 1 == o.size() ? " and " : ", ";
    c += with_article(o[i]->name());
  }
  return c + ", from left to right";
}

std::vector<QA> questions(const Scene& s, std::uint64_t seed) {
  Rng rng(seed ^ 0x5155455354494f4eull);
  std::array<int, kShapeCount> per_shape{};
  std::array<int, kColourCount> per_colour{};
  for (const auto& o : s.objects) ++per_shape[static_cast<std::size_t>(o.shape)], ++per_colour[static_cast<std::size_t>(o.colour)];
  auto once = [&](auto pred) {
    std::vector<const Object*> v;
    for (const auto& o : s.objects)
      if (pred(o)) v.push_back(&o);
    return v;
  };
  std::vector<QA> out;
  // colour
  auto unique_shape = once([&](const Object& o) { return per_shape[static_cast<std::size_t>(o.shape)] == 1; });
  if (!unique_shape.empty()) {
    const Object* o = unique_shape[static_cast<std::size_t>(rng.below(static_cast<int>(unique_shape.size())))];
    out.push_back({QuestionKind::colour, std::string("What colour is the ") + shape_name(o->shape) + "?", colour_name(o->colour)});
  }
  out.push_back(count_question(s, static_cast<Shape>(rng.below(kShapeCount))));
  // kind
  auto unique_colour = once([&](const Object& o) { return per_colour[static_cast<std::size_t>(o.colour)] == 1; });
  if (!unique_colour.empty()) {
    const Object* o = unique_colour[static_cast<std::size_t>(rng.below(static_cast<int>(unique_colour.size())))];
    out.push_back({QuestionKind::kind, std::string("What shape is the ") + colour_name(o->colour) + " object?", shape_name(o->shape)});
  }
  // position: a reference whose kind is unique, exactly one object clearly left of it, none in between,
  // and no other object with the answer's colour and kind.
  std::vector<std::pair<const Object*, const Object*>> pos;
  for (const Object* r : unique_shape) {
    const Object* left = nullptr;
    int clear = 0, unclear = 0;
    for (const auto& o : s.objects) {
      if (&o == r) continue;
      const double margin = 0.5 * (o.radius + r->radius);
      if (o.centre.x < r->centre.x - margin) ++clear, left = &o;
      else if (o.centre.x < r->centre.x + margin) ++unclear;
    }
    if (clear != 1 || unclear != 0) continue;
    int same_name = 0;  // the answer names one object only
    for (const auto& o : s.objects) same_name += o.shape == left->shape && o.colour == left->colour;
    if (same_name == 1) pos.push_back({r, left});
  }
  if (!pos.empty()) {
    const auto& p = pos[static_cast<std::size_t>(rng.below(static_cast<int>(pos.size())))];
    out.push_back({QuestionKind::position, std::string("What is left of the ") + shape_name(p.first->shape) + "?", p.second->name()});
  }
  out.push_back(exists_question(s, static_cast<Shape>(rng.below(kShapeCount))));
  return out;
}

namespace {
int count_of(const Scene& s, Shape shape) {
  int n = 0;
  for (const auto& o : s.objects) n += o.shape == shape;
  return n;
}
}  // namespace

QA count_question(const Scene& s, Shape shape) {
  return {QuestionKind::count, std::string("How many ") + shape_plural(shape) + " are there?",
          std::to_string(count_of(s, shape))};
}

QA exists_question(const Scene& s, Shape shape) {
  return {QuestionKind::exists, std::string("Is there a ") + shape_name(shape) + "?", count_of(s, shape) ? "yes" : "no"};
}

}  // namespace lli::world
