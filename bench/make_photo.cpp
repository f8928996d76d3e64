// Benchmark input for a whole edit on a large photo: PHOTO resized (Lanczos) so that its longer
// side is SIDE pixels, written as OUT.png, plus OUT.mask.png: a filled ellipse (255 inside) at
// the given fraction of the image (cx, cy, rx, ry as fractions of width/height).
//
//   make_photo PHOTO SIDE OUT [--ellipse 0.5,0.55,0.12,0.15]
#include <CLI/CLI.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Resize a photo to a given longer side and write an elliptical object mask beside it"};
  std::string photo, out;
  int side = 1024;
  std::vector<double> e{0.5, 0.55, 0.12, 0.15};
  app.add_option("photo", photo, "input photo")->required();
  app.add_option("side", side, "longer side of the output, pixels")->required();
  app.add_option("out", out, "output prefix: OUT.png and OUT.mask.png")->required();
  app.add_option("--ellipse", e, "mask ellipse cx,cy,rx,ry as fractions of the size")->delimiter(',')->expected(4);
  CLI11_PARSE(app, argc, argv);
  cv::Mat img = cv::imread(photo, cv::IMREAD_COLOR);
  if (img.empty()) {
    std::fprintf(stderr, "make_photo: %s: cannot read the image\n", photo.c_str());
    return 3;
  }
  const double s = static_cast<double>(side) / std::max(img.cols, img.rows);
  cv::Mat big;
  cv::resize(img, big, cv::Size(static_cast<int>(std::lround(img.cols * s)), static_cast<int>(std::lround(img.rows * s))), 0,
             0, cv::INTER_LANCZOS4);
  cv::Mat mask(big.rows, big.cols, CV_8UC1, cv::Scalar(0));
  cv::ellipse(mask, cv::Point(static_cast<int>(e[0] * big.cols), static_cast<int>(e[1] * big.rows)),
              cv::Size(static_cast<int>(e[2] * big.cols), static_cast<int>(e[3] * big.rows)), 0, 0, 360, cv::Scalar(255),
              cv::FILLED);
  if (!cv::imwrite(out + ".png", big) || !cv::imwrite(out + ".mask.png", mask)) {
    std::fprintf(stderr, "make_photo: cannot write %s.png / %s.mask.png\n", out.c_str(), out.c_str());
    return 5;
  }
  std::printf("%s.png %dx%d, %s.mask.png\n", out.c_str(), big.cols, big.rows, out.c_str());
  return 0;
}
