// Text grounding for the tools (lli-segment --text, lli-edit replace --target): which grounder
// and checkpoint to use (flags, models.yaml, what is installed), the session cache of the
// detector's image features, and the boxes chosen per phrase. The model math is in lib/
// (pipelines/ground_owl.h, pipelines/ground_llava.h).
//
// Grounder resolution: --grounder-model (a directory or registry name; its kind from the registry
// entry or config.json's model_type) > tools.<tool>.grounder_model in models.yaml > for owl
// grounders the first installed registry entry of kind owlv2 (preferred) or owlvit other than the
// demo models, then an installed demo model of those kinds (demo-owl, said on stderr), for llava
// tools.lli-chat.model. --grounder picks the kind (owlv2 | owlvit | llava); it must agree with the
// checkpoint's.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/cli.h"
#include "lli/session.h"

namespace lli::cli {

struct GroundingOptions {
  std::string grounder;        // owlv2 | owlvit | llava | "" (resolved)
  std::string grounder_model;  // directory or registry name
  double box_threshold = 0.1;  // owl: a detection's score (sigmoid of its logit) must exceed this
  bool all_instances = false;  // every detection of a phrase (after NMS), not only the best
  double nms = 0.5;            // --all-instances: IoU above which a lower-scoring box is dropped
};
void add_grounding_flags(CLI::App& app, GroundingOptions& g);

struct GroundedBox {
  int phrase = 0;
  std::string phrase_text;
  std::optional<double> score;  // owl: sigmoid of the logit; llava: none
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // original pixels
  int box_index = -1;                     // owl: patch index
  std::string answer;                     // llava: the model's answer
  nlohmann::json to_json() const;
};

struct GroundingRun {
  std::vector<GroundedBox> selected;  // per phrase: its best box above the threshold, or every
                                      // instance with --all-instances (phrase order)
  std::vector<GroundedBox> detections;  // owl: the reference's post-processed list at the
                                        // threshold (patch order); llava: one per phrase
  std::vector<GroundedBox> best;        // owl: per phrase its best box, whatever its score
  nlohmann::json timings = nlohmann::json::object();
};

class TextGrounder {
 public:
  // Resolves and loads the grounder (ModelError, exit 4, when none is installed / usable).
  TextGrounder(const CommonOptions& o, const GroundingOptions& g, const std::string& tool);
  ~TextGrounder();
  const std::string& kind() const;        // "owlv2" | "owlvit" | "llava"
  const std::string& model_name() const;  // registry name or directory
  // Runs the grounder on `bgr` for every phrase. With a session and the image's sha256, owl image
  // features are read from / stored in the session cache.
  GroundingRun run(const cv::Mat& bgr, const std::vector<std::string>& phrases, Session* session,
                   const std::string& image_sha) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lli::cli
