// Schedulers against diffusers 0.31: the PNDM golden of gligen-gen-tiny-a (alphas_cumprod,
// timesteps, three PLMS steps, and the pipeline's six steps replayed from its UNet outputs), and
// for the other classes numbers computed from the reference formulas (a throwaway re-implementation
// of the diffusers code with torch 1.13 / numpy 1.24, the reference's versions) on a small
// deterministic problem: x0 = linspace(-1.5, 1.5, 16), model(x) = 0.3 x + linspace(0.8, -0.6, 16).
// Plus invariants (an exact denoiser recovers x0), from_config semantics and config errors.
#include <ATen/CPUGeneratorImpl.h>
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <fstream>

#include "lli/error.h"
#include "model_test_util.h"
#include "schedulers/scheduler.h"
#include "test_util.h"

using lli::schedulers::make_scheduler;
using lli::schedulers::Scheduler;
using lli::schedulers::SchedulerKind;
using lli::schedulers::SchedulerOptions;
using lli::test::error_of;
using lli::test::has;
using lli::test::max_abs_diff;

namespace {

// Expected values (diffusers 0.31 formulas, float32 as the reference computes them).
const std::vector<double> ddim_fix_ts = {901, 801, 701, 601, 501, 401, 301, 201, 101, 1};
const std::vector<double> ddim_fix_final = {
    -10.078396797180176, -8.804641723632812,  -7.530890464782715,  -6.257135391235352,
    -4.983382701873779,  -3.7096285820007324, -2.4358744621276855, -1.1621215343475342,
    0.11163204163312912, 1.3853857517242432,  2.659139633178711,   3.932894468307495,
    5.206648826599121,   6.480400562286377,   7.754154682159424,   9.027908325195312};
const std::vector<double> ddim_eta_final = {-1.0,
                                            -1.0,
                                            -0.79831463098526,
                                            -0.7075895071029663,
                                            -0.3966740667819977,
                                            -0.998805582523346,
                                            -0.996062695980072,
                                            -0.3921864926815033,
                                            0.7849090695381165,
                                            -0.6967968940734863,
                                            0.8574901223182678,
                                            0.9994367957115173,
                                            1.0,
                                            1.0,
                                            0.9925908446311951,
                                            0.6586285829544067};
const std::vector<double> euler_fix_ts = {901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0};
const std::vector<double> euler_fix_sigmas = {8.390686988830566,
                                              5.134433269500732,
                                              3.347764492034912,
                                              2.2928547859191895,
                                              1.6236928701400757,
                                              1.1682164669036865,
                                              0.8356532454490662,
                                              0.5740507245063782,
                                              0.3461872935295105,
                                              0.04131447896361351,
                                              0.0};
const double euler_fix_init = 8.450066566467285;
const std::vector<double> euler_fix_in0 = {
    -0.17751339077949524, -0.1538449376821518,  -0.13017649948596954, -0.1065080314874649,
    -0.08283958584070206, -0.05917113274335861, -0.03550267219543457, -0.011834229342639446,
    0.011834223754703999, 0.03550267592072487,  0.05917113274335861,  0.08283958584070206,
    0.1065080314874649,   0.13017649948596954,  0.153844952583313,    0.17751339077949524};
const std::vector<double> euler_fix_final = {
    -10.017629623413086, -8.751784324645996, -7.485937595367432, -6.220091819763184,
    -4.954245567321777,  -3.688399076461792, -2.422553300857544, -1.1567074060440063,
    0.10913826525211334, 1.3749843835830688, 2.6408305168151855, 3.9066765308380127,
    5.17252254486084,    6.438368797302246,  7.704214572906494,  8.970060348510742};
const std::vector<double> euler_lin_ts = {999.0, 888.0, 777.0, 666.0, 555.0, 444.0, 333.0, 222.0, 111.0, 0.0};
const std::vector<double> euler_lin_sigmas = {157.40725708007812,
                                              54.56751251220703,
                                              21.417495727539062,
                                              9.488921165466309,
                                              4.703334331512451,
                                              2.5546910762786865,
                                              1.4623569250106812,
                                              0.8219356536865234,
                                              0.3803713917732239,
                                              0.010001329705119133,
                                              0.0};
const std::vector<double> euler_lin_final = {
    -105.34566497802734, -92.0569076538086,  -78.76817321777344,  -65.47943115234375,
    -52.190670013427734, -38.90192413330078, -25.613174438476562, -12.324432373046875,
    0.9643146991729736,  14.253066062927246, 27.54181480407715,   40.83055877685547,
    54.11930465698242,   67.40807342529297,  80.69681549072266,   93.98556518554688};
const std::vector<double> euler_karras_ts = {999.0,
                                             916.2839965820312,
                                             815.044921875,
                                             687.1532592773438,
                                             523.1989135742188,
                                             327.147216796875,
                                             145.93902587890625,
                                             40.85687255859375,
                                             6.73240852355957,
                                             0.0};
const std::vector<double> euler_karras_sigmas = {14.614645004272461,
                                                 9.102935791015625,
                                                 5.478400707244873,
                                                 3.1686108112335205,
                                                 1.7494229078292847,
                                                 0.9140763878822327,
                                                 0.44692087173461914,
                                                 0.20139984786510468,
                                                 0.08191104978322983,
                                                 0.029167532920837402,
                                                 0.0};
const std::vector<double> euler_karras_final = {
    -15.679388999938965, -13.699822425842285, -11.720257759094238, -9.740692138671875,
    -7.761125564575195,  -5.781560897827148,  -3.801992893218994,  -1.8224278688430786,
    0.15713736414909363, 2.1367030143737793,  4.116269588470459,   6.095835208892822,
    8.075401306152344,   10.054966926574707,  12.03453254699707,   14.014097213745117};
const std::vector<double> euler_exp_ts = {933.5067138671875, 709.5988159179688, 409.4763488769531,
                                          132.2843780517578, 21.82469367980957, 1.9338455200195312};
const std::vector<double> euler_exp_sigmas = {10.0,
                                              3.465724229812622,
                                              1.2011244297027588,
                                              0.41627660393714905,
                                              0.14426998794078827,
                                              0.05000000074505806,
                                              0.029167532920837402};
const std::vector<double> euler_loglin_sigmas = {157.40725708007812,
                                                 22.784072875976562,
                                                 3.297903299331665,
                                                 0.4773584306240082,
                                                 0.06909572333097458,
                                                 0.010001329705119133,
                                                 0.0};
const std::vector<double> euler_cont_ts = {0.6705060005187988, 0.35189712047576904, 0.11992401629686356,
                                           -0.09090656042098999, -0.8836747407913208};
const std::vector<double> euler_cont_final = {
    -1.5020086765289307,   -1.316125750541687,  -1.1302425861358643, -0.9443594217300415,
    -0.7584763765335083,   -0.5725932717323303, -0.3867100775241852, -0.20082701742649078,
    -0.014943927526473999, 0.17093923687934875, 0.35682228207588196, 0.5427054166793823,
    0.7285885810852051,    0.9144716858863831,  1.1003546714782715,  1.2862379550933838};
const std::vector<double> eulera_fix_ts = {901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0};
const double eulera_fix_init = 8.450066566467285;
const std::vector<double> eulera_fix_final = {
    -12.548133850097656, -10.768143653869629, -5.772446632385254,  -4.101579666137695,
    -3.445646047592163,  -3.473238229751587,  -2.2278590202331543, -1.7284942865371704,
    -0.2772676646709442, 0.3250141143798828,  2.6193645000457764,  5.72410774230957,
    4.446620941162109,   9.885581016540527,   9.31874942779541,    5.330406188964844};
const std::vector<double> dpm_fix_ts = {901, 811, 721, 631, 541, 451, 361, 271, 181, 91};
const std::vector<double> dpm_fix_sigmas = {8.390686988830566,
                                            5.376336574554443,
                                            3.6306543350219727,
                                            2.557664632797241,
                                            1.8585612773895264,
                                            1.3761794567108154,
                                            1.02392578125,
                                            0.7515089511871338,
                                            0.5269757509231567,
                                            0.32353323698043823,
                                            0.0};
const std::vector<double> dpm_fix_final = {
    -9.379888534545898,  -8.194268226623535, -7.008646011352539,  -5.823023796081543,
    -4.637401580810547,  -3.451779842376709, -2.2661590576171875, -1.0805379152297974,
    0.10508336871862411, 1.2907050848007202, 2.4763262271881104,  3.6619479656219482,
    4.847568988800049,   6.033190727233887,  7.218814373016357,   8.404433250427246};
const std::vector<double> dpm_karras_ts = {999, 916, 815, 687, 523, 327, 146, 41, 7, 0};
const std::vector<double> dpm_karras_sigmas = {14.614645004272461,
                                               9.102935791015625,
                                               5.478400707244873,
                                               3.1686108112335205,
                                               1.7494229078292847,
                                               0.9140763878822327,
                                               0.44692087173461914,
                                               0.20139984786510468,
                                               0.08191104978322983,
                                               0.029167532920837402,
                                               0.0};
const std::vector<double> dpm_karras_final = {
    -13.363974571228027, -11.67574405670166, -9.987512588500977,  -8.29928207397461,
    -6.611049175262451,  -4.922816276550293, -3.2345848083496094, -1.5463550090789795,
    0.1418762356042862,  1.8301074504852295, 3.5183393955230713,  5.206571578979492,
    6.894803047180176,   8.58303165435791,   10.271267890930176,  11.959492683410645};
const std::vector<double> dpm_o3_ts = {999, 851, 673, 440, 177, 44, 8, 0};
const std::vector<double> dpm_o3_sigmas = {157.40725708007812,   39.57838439941406,    9.951563835144043,
                                           2.5022149085998535,   0.6291553378105164,   0.1581944227218628,
                                           0.039776306599378586, 0.010001329705119133, 0.0};
const std::vector<double> dpm_o3_final = {
    -86.23009490966797, -75.35137176513672,  -64.47270202636719,  -53.59397888183594,
    -42.71528625488281, -31.836599349975586, -20.957897186279297, -10.07921028137207,
    0.7994872331619263, 11.678186416625977,  22.556875228881836,  33.435577392578125,
    44.31426239013672,  55.19296646118164,   66.07166290283203,   76.95037841796875};
const std::vector<double> dpm_heun_ts = {995, 852, 709, 566, 424, 281, 138};
const std::vector<double> dpm_heun_sigmas = {
    160.41366577148438, 4.288414478302002,   2.0598742961883545, 1.2498003244400024,
    0.7998669147491455, 0.48522189259529114, 0.2328156679868698, 0.0};
const std::vector<double> dpm_heun_final = {
    -1.8893049955368042,   -1.6537985801696777, -1.4182920455932617,  -1.1827857494354248,
    -0.9472795724868774,   -0.7117732167243958, -0.47626668214797974, -0.2407604306936264,
    -0.005254067946225405, 0.23025232553482056, 0.46575871109962463,  0.7012649774551392,
    0.9367713928222656,    1.1722780466079712,  1.4077844619750977,   1.643290638923645};
const std::vector<double> prk_ts = {800, 700, 700, 600, 600, 500, 500, 400, 400, 300, 300, 200, 200, 0};
const std::vector<double> prk_final = {
    -18.36667251586914,  -16.047319412231445, -13.727968215942383, -11.408616065979004,
    -9.089265823364258,  -6.769914150238037,  -4.450562000274658,  -2.131211519241333,
    0.18813952803611755, 2.507490634918213,   4.826842308044434,   7.146193504333496,
    9.465545654296875,   11.784897804260254,  14.10425090789795,   16.423601150512695};
const std::vector<double> plms_v_ts = {999, 749, 749, 499, 249};
const std::vector<double> plms_v_final = {
    -1.3517751693725586,  -1.1845638751983643, -1.0173523426055908, -0.8501408696174622,
    -0.6829297542572021,  -0.5157181024551392, -0.3485066890716553, -0.18129535019397736,
    -0.01408398151397705, 0.1531275063753128,  0.3203389048576355,  0.48755037784576416,
    0.6547619104385376,   0.8219732642173767,  0.9891843795776367,  1.1563963890075684};
const std::vector<double> pndm_linspace = {999, 888, 888, 777, 666, 555, 444, 333, 222, 111, 0};
const std::vector<double> ddim_linspace = {999, 888, 777, 666, 555, 444, 333, 222, 111, 0};
const std::vector<double> euler_linspace = {999.0, 888.0, 777.0, 666.0, 555.0, 444.0, 333.0, 222.0, 111.0, 0.0};
const std::vector<double> dpm_linspace = {999, 899, 799, 699, 599, 500, 400, 300, 200, 100};
const std::vector<double> pndm_trailing = {999, 899, 899, 799, 699, 599, 499, 399, 299, 199, 99};
const std::vector<double> ddim_trailing = {999, 899, 799, 699, 599, 499, 399, 299, 199, 99};
const std::vector<double> euler_trailing = {999.0, 899.0, 799.0, 699.0, 599.0, 499.0, 399.0, 299.0, 199.0, 99.0};
const std::vector<double> dpm_trailing = {999, 899, 799, 699, 599, 499, 399, 299, 199, 99};
const std::vector<double> pndm_leading = {901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1};
const std::vector<double> ddim_leading = {901, 801, 701, 601, 501, 401, 301, 201, 101, 1};
const std::vector<double> euler_leading = {901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0};
const std::vector<double> dpm_leading = {901, 811, 721, 631, 541, 451, 361, 271, 181, 91};
const std::vector<double> ddim_trailing_7 = {999, 856, 713, 570, 428, 285, 142};
const std::vector<double> euler_linspace_7 = {999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0};
const std::vector<double> ddim_trailing_3 = {999, 666, 332};
const std::vector<double> euler_linspace_3 = {999.0, 499.5, 0.0};
const std::vector<double> pndm_add_noise = {
    0.06486493349075317,    0.056216299533843994,  0.04756760597229004,   0.038918912410736084,
    0.030270278453826904,   0.021621614694595337,  0.01297295093536377,   0.004324261099100113,
    -0.0043242983520030975, -0.012972965836524963, -0.021621614694595337, -0.030270278453826904,
    -0.038918912410736084,  -0.047567546367645264, -0.05621623992919922,  -0.06486493349075317};
const std::vector<double> euler_add_noise = {
    0.7928547859191895,    0.6871408224105835,   0.5814268589019775,  0.47571277618408203,
    0.36999887228012085,   0.2642849087715149,   0.15857082605361938, 0.052856817841529846,
    -0.052856892347335815, -0.15857088565826416, -0.2642849087715149, -0.36999887228012085,
    -0.47571277618408203,  -0.581426739692688,   -0.687140703201294,  -0.7928547859191895};
const std::vector<double> dpm_add_noise = {
    0.38513660430908203,   0.3337850272655487,   0.28243350982666016,  0.23108190298080444,
    0.1797303855419159,    0.12837885320186615,  0.07702727615833282,  0.025675702840089798,
    -0.025675732642412186, -0.07702727615833282, -0.12837885320186615, -0.1797303855419159,
    -0.23108190298080444,  -0.2824334502220154,  -0.3337849974632263,  -0.38513660430908203};
const std::vector<double> cos_ac = {0.9999586939811707, 0.9999125599861145,    0.8458880186080933,
                                    0.4922850430011749, 2.428766265438753e-06, 2.4287349909002387e-09};
const std::vector<double> zsnr_ac = {0.9991499781608582,  0.9982334971427917,     0.6524567008018494,
                                     0.24101859331130981, 1.9678900287090073e-07, 0.0};
const std::vector<double> euler_zsnr_sigmas = {4095.999755859375, 5.398741722106934, 1.7680811882019043,
                                               0.7270563840866089, 0.0};
const double euler_zsnr_init = 4095.999755859375;
const std::vector<double> trained_ac = {0.9990000128746033, 0.9970020651817322, 0.9940109848976135, 0.9900349378585815,
                                        0.9850847721099854, 0.9791743159294128, 0.972320020198822,  0.964541494846344,
                                        0.9558606147766113, 0.9463019967079163, 0.9358927011489868, 0.9246619343757629,
                                        0.9126413464546204, 0.8998643755912781, 0.8863664269447327, 0.8721845746040344,
                                        0.8573574423789978, 0.8419249653816223, 0.8259283900260925, 0.8094098567962646};
const std::vector<double> ddim_thr_prev = {
    -1.399436354637146,  -1.2341647148132324, -1.0688929557800293, -0.9036210775375366,
    -0.7276895642280579, -0.5197782516479492, -0.3118668794631958, -0.10395567119121552,
    0.10395563393831253, 0.3118669390678406,  0.5197782516479492,  0.7276895642280579,
    0.9036210775375366,  1.0688929557800293,  1.234164834022522,   1.399436354637146};
const std::vector<double> dpm_thr_prev = {
    -1.5100610256195068, -1.310084581375122,  -1.1101080179214478,  -0.910131573677063,
    -0.7101550698280334, -0.5084723234176636, -0.30508336424827576, -0.1016944944858551,
    0.10169444978237152, 0.30508339405059814, 0.5084723234176636,   0.7101550698280334,
    0.910131573677063,   1.1101080179214478,  1.310084581375122,    1.5100610256195068};

std::filesystem::path fixture_dir() { return lli::test::fixtures_dir() / "gligen-gen-tiny-a"; }
lli::schedulers::SchedulerConfig fixture_config() {
  return lli::schedulers::load_scheduler_config(fixture_dir() / "scheduler" / "scheduler_config.json");
}
lli::schedulers::SchedulerConfig json_config(const std::string& text) {
  return lli::schedulers::scheduler_config_from_json(nlohmann::json::parse(text), "test_scheduler_config.json");
}
std::unique_ptr<Scheduler> from_json(const std::string& text, std::optional<SchedulerKind> kind = {},
                                     const SchedulerOptions& opts = {}) {
  return make_scheduler(json_config(text), kind, opts);
}

torch::Tensor x0() { return torch::linspace(-1.5, 1.5, 16).reshape({1, 4, 2, 2}); }
torch::Tensor model(const torch::Tensor& x) { return 0.3 * x + torch::linspace(0.8, -0.6, 16).reshape({1, 4, 2, 2}); }

// The loop of the pipelines on the test problem: x = x0 * init_noise_sigma, then per timestep
// scale_model_input -> model -> step.
torch::Tensor run(Scheduler& s, std::int64_t n, at::Generator* gen = nullptr) {
  s.set_timesteps(n);
  auto x = x0() * s.init_noise_sigma();
  for (double t : s.timesteps()) x = s.step(model(s.scale_model_input(x, t)), t, x, gen);
  return x;
}

torch::Tensor as_tensor(const std::vector<double>& v, const torch::Tensor& like) {
  return torch::tensor(v, torch::kFloat64).reshape(like.sizes());
}

// allclose(got, want, atol, rtol), printing the max difference.
void check_close(const std::string& what, const torch::Tensor& got, const torch::Tensor& want, double atol = 1e-5,
                 double rtol = 1e-5) {
  const double d = max_abs_diff(got, want);
  const auto g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  const bool ok = ((g - w).abs() <= atol + rtol * w.abs()).all().item<bool>();
  MESSAGE(what << ": max |diff| " << d);
  CHECK_MESSAGE(ok, what << ": not within atol " << atol << " rtol " << rtol << " (max |diff| " << d << ")");
}
void check_close(const std::string& what, const torch::Tensor& got, const std::vector<double>& want, double atol = 1e-5,
                 double rtol = 1e-5) {
  check_close(what, got, as_tensor(want, got), atol, rtol);
}
void check_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                 double atol = 1e-5, double rtol = 1e-5) {
  REQUIRE(got.size() == want.size());
  check_close(what, torch::tensor(got, torch::kFloat64), torch::tensor(want, torch::kFloat64), atol, rtol);
}

at::Generator seeded(std::uint64_t seed) { return at::detail::createCPUGenerator(seed); }

}  // namespace

// -------------------------------------------------------------------------------------------------
// PNDM: the fixture's golden.

TEST_CASE("schedulers: PNDM (PLMS) matches the gligen-gen-tiny-a golden") {
  const auto g = lli::test::load_golden(fixture_dir() / "golden.safetensors");
  auto s = make_scheduler(fixture_config());
  CHECK(s->kind() == SchedulerKind::pndm);
  CHECK(s->class_name() == "PNDMScheduler");
  check_close("sched_alphas_cumprod", s->alphas_cumprod(), g.at("sched_alphas_cumprod"));

  const auto ints = [](const torch::Tensor& t) {
    std::vector<double> v;
    for (std::int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<double>(t[i].item<std::int64_t>()));
    return v;
  };
  s->set_timesteps(10);
  CHECK(s->timesteps() == ints(g.at("sched_timesteps_10")));
  s->set_timesteps(5);
  CHECK(s->timesteps() == ints(g.at("pipe_timesteps")));
  CHECK(s->init_noise_sigma() == 1.0);

  // Three sequential steps (stateful: the PLMS history).
  auto x = g.at("sched_step_sample0");
  for (int i = 0; i < 3; ++i) {
    const double t = s->timesteps()[static_cast<std::size_t>(i)];
    check_close("sched_step_model_input[" + std::to_string(i) + "]", s->scale_model_input(x, t),
                g.at("sched_step_model_input")[i]);
    x = s->step(g.at("sched_step_eps")[i], t, x);
    check_close("sched_step_prev[" + std::to_string(i) + "]", x, g.at("sched_step_prev")[i]);
  }

  // The pipeline's denoising loop replayed from its raw UNet outputs (CFG 7.5): every latent.
  // set_timesteps resets the run state, so the same object runs it again from scratch.
  for (int pass = 0; pass < 2; ++pass) {
    s->set_timesteps(5);
    auto lat = g.at("pipe_init_noise") * s->init_noise_sigma();
    const auto& ts = s->timesteps();
    REQUIRE(static_cast<std::int64_t>(ts.size()) == g.at("pipe_latents_after_step").size(0));
    for (std::size_t i = 0; i < ts.size(); ++i) {
      auto parts = g.at("pipe_noise_pred_raw")[static_cast<std::int64_t>(i)].chunk(2);
      auto noise = parts[0] + 7.5 * (parts[1] - parts[0]);
      lat = s->step(noise, ts[i], lat);
    }
    check_close("pipe_latents_after_step[5] (pass " + std::to_string(pass) + ")", lat,
                g.at("pipe_latents_after_step")[5], 1e-5, 1e-5);
  }
}

TEST_CASE("schedulers: PNDM Runge-Kutta warm-up, v_prediction and add_noise") {
  auto prk = from_json(R"({"_class_name": "PNDMScheduler"})");  // skip_prk_steps defaults to false
  auto x = run(*prk, 5);
  CHECK(prk->timesteps() == prk_ts);
  check_close("PRK 5 steps", x, prk_final);

  auto v = from_json(R"({"_class_name": "PNDMScheduler", "skip_prk_steps": true, "prediction_type": "v_prediction",
                         "timestep_spacing": "trailing", "set_alpha_to_one": true})");
  x = run(*v, 4);
  CHECK(v->timesteps() == plms_v_ts);
  check_close("PLMS v_prediction trailing", x, plms_v_final);

  auto s = make_scheduler(fixture_config());
  s->set_timesteps(10);
  auto noise = torch::linspace(1.0, -1.0, 16).reshape({1, 4, 2, 2});
  check_close("PNDM add_noise t=501", s->add_noise(x0(), noise, 501), pndm_add_noise);
  CHECK(error_of<lli::InputError>([&] { prk->set_timesteps(3); }) != "<no error>");  // PRK needs 4 steps
}

// -------------------------------------------------------------------------------------------------
// Timestep spacing: 10 steps, steps_offset 1, each class and spacing.

TEST_CASE("schedulers: timestep spacing leading, linspace and trailing") {
  struct Case {
    std::string cls;
    std::string spacing;
    const std::vector<double>& want;
  };
  const std::vector<Case> cases = {
      {"PNDMScheduler", "leading", pndm_leading},
      {"PNDMScheduler", "linspace", pndm_linspace},
      {"PNDMScheduler", "trailing", pndm_trailing},
      {"DDIMScheduler", "leading", ddim_leading},
      {"DDIMScheduler", "linspace", ddim_linspace},
      {"DDIMScheduler", "trailing", ddim_trailing},
      {"EulerDiscreteScheduler", "leading", euler_leading},
      {"EulerDiscreteScheduler", "linspace", euler_linspace},
      {"EulerDiscreteScheduler", "trailing", euler_trailing},
      {"EulerAncestralDiscreteScheduler", "leading", euler_leading},
      {"EulerAncestralDiscreteScheduler", "linspace", euler_linspace},
      {"EulerAncestralDiscreteScheduler", "trailing", euler_trailing},
      {"DPMSolverMultistepScheduler", "leading", dpm_leading},
      {"DPMSolverMultistepScheduler", "linspace", dpm_linspace},
      {"DPMSolverMultistepScheduler", "trailing", dpm_trailing},
  };
  for (const auto& c : cases) {
    auto s = from_json(R"({"_class_name": ")" + c.cls +
                       R"(", "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": ")" + c.spacing + "\"}");
    s->set_timesteps(10);
    CHECK_MESSAGE(s->timesteps() == c.want, c.cls << " " << c.spacing);
  }
  auto ddim = from_json(R"({"_class_name": "DDIMScheduler", "timestep_spacing": "trailing"})");
  auto euler = from_json(R"({"_class_name": "EulerDiscreteScheduler"})");
  ddim->set_timesteps(7);
  euler->set_timesteps(7);
  CHECK(ddim->timesteps() == ddim_trailing_7);
  CHECK(euler->timesteps() == euler_linspace_7);  // fractional float32 timesteps (832.5, ...)
  ddim->set_timesteps(3);
  euler->set_timesteps(3);
  CHECK(ddim->timesteps() == ddim_trailing_3);
  CHECK(euler->timesteps() == euler_linspace_3);
}

TEST_CASE("schedulers: beta schedules (squaredcos_cap_v2, zero terminal SNR, trained_betas)") {
  const auto pick = [](const torch::Tensor& ac) {
    return torch::stack({ac[0], ac[1], ac[250], ac[500], ac[998], ac[999]});
  };
  check_close(
      "squaredcos_cap_v2 alphas_cumprod",
      pick(from_json(R"({"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2"})")->alphas_cumprod()),
      cos_ac, 1e-12, 1e-6);
  check_close(
      "rescale_betas_zero_snr alphas_cumprod",
      pick(from_json(R"({"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                 "beta_end": 0.012, "rescale_betas_zero_snr": true})")
               ->alphas_cumprod()),
      zsnr_ac, 1e-12, 1e-6);
  nlohmann::json j = {{"_class_name", "DDIMScheduler"}, {"num_train_timesteps", 20}};
  for (int i = 0; i < 20; ++i) j["trained_betas"].push_back(0.001 * (i + 1));
  check_close("trained_betas alphas_cumprod",
              make_scheduler(lli::schedulers::scheduler_config_from_json(j, "t.json"))->alphas_cumprod(), trained_ac);

  // Euler with zero terminal SNR: the last alphas_cumprod is 2^-24, so the first sigma is ~4096.
  auto e =
      from_json(R"({"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                         "beta_end": 0.012, "rescale_betas_zero_snr": true, "timestep_spacing": "trailing",
                         "prediction_type": "v_prediction"})");
  e->set_timesteps(4);
  check_close("Euler zero-SNR sigmas", e->sigmas(), euler_zsnr_sigmas);
  CHECK(e->init_noise_sigma() == doctest::Approx(euler_zsnr_init).epsilon(1e-7));
}

// -------------------------------------------------------------------------------------------------
// DDIM.

TEST_CASE("schedulers: DDIM from the PNDM config, and eta > 0 with a seeded generator") {
  auto s = make_scheduler(fixture_config(), SchedulerKind::ddim);
  // from_config: the file's clip_sample / set_alpha_to_one (false) replace DDIM's defaults (true).
  CHECK(s->describe().at("_class_name") == "DDIMScheduler");
  CHECK(s->describe().at("clip_sample") == false);
  CHECK(s->describe().at("set_alpha_to_one") == false);
  CHECK(s->describe().at("timestep_spacing") == "leading");
  CHECK(s->describe().at("steps_offset") == 1);
  CHECK_FALSE(s->describe().contains("skip_prk_steps"));
  auto x = run(*s, 10);
  CHECK(s->timesteps() == ddim_fix_ts);
  check_close("DDIM 10 steps", x, ddim_fix_final);

  // Default config (clip_sample, set_alpha_to_one), eta 0.5: variance noise from the generator.
  auto e = from_json(R"({"_class_name": "DDIMScheduler"})", {}, SchedulerOptions{0.5, std::nullopt});
  CHECK(e->describe().at("eta") == 0.5);
  auto gen = seeded(0);
  check_close("DDIM eta 0.5 seed 0", run(*e, 4, &gen), ddim_eta_final);
  auto gen2 = seeded(1);
  CHECK(max_abs_diff(run(*e, 4, &gen2), as_tensor(ddim_eta_final, x0())) > 1e-3);  // the noise matters
}

TEST_CASE("schedulers: dynamic thresholding (DDIM and DPM-Solver++)") {
  auto d = from_json(R"({"_class_name": "DDIMScheduler", "thresholding": true, "sample_max_value": 1.5,
                         "dynamic_thresholding_ratio": 0.9, "prediction_type": "sample"})");
  d->set_timesteps(10);
  check_close("DDIM thresholded step", d->step(x0() * 2, d->timesteps()[2], x0()), ddim_thr_prev);
  auto p = from_json(R"({"_class_name": "DPMSolverMultistepScheduler", "thresholding": true, "sample_max_value": 1.2,
                         "dynamic_thresholding_ratio": 0.8, "prediction_type": "sample"})");
  p->set_timesteps(10);
  check_close("DPM thresholded step", p->step(x0() * 2, p->timesteps()[0], x0()), dpm_thr_prev);
}

// -------------------------------------------------------------------------------------------------
// Euler / Euler ancestral.

TEST_CASE("schedulers: Euler from the PNDM config (leading spacing)") {
  auto s = make_scheduler(fixture_config(), SchedulerKind::euler);
  CHECK(s->describe().at("timestep_spacing") == "leading");
  CHECK(s->describe().at("interpolation_type") == "linear");  // Euler's own default
  s->set_timesteps(10);
  CHECK(s->timesteps() == euler_fix_ts);
  check_close("Euler sigmas", s->sigmas(), euler_fix_sigmas);
  // leading spacing: init_noise_sigma = sqrt(sigma_max^2 + 1)
  CHECK(s->init_noise_sigma() == euler_fix_init);
  check_close("Euler scale_model_input", s->scale_model_input(x0(), s->timesteps()[0]), euler_fix_in0);
  check_close("Euler 10 steps", run(*s, 10), euler_fix_final);
  s->set_timesteps(10);
  auto noise = torch::linspace(1.0, -1.0, 16).reshape({1, 4, 2, 2});
  check_close("Euler add_noise", s->add_noise(x0(), noise, s->timesteps()[3]), euler_add_noise);
  CHECK(has(error_of<lli::RuntimeError>([&] { s->add_noise(x0(), noise, 500.5); }), "not in the schedule"));
}

TEST_CASE("schedulers: Euler linspace, Karras, exponential, log-linear and continuous timesteps") {
  auto lin = from_json(R"({"_class_name": "EulerDiscreteScheduler"})");
  lin->set_timesteps(10);
  CHECK(lin->timesteps() == euler_lin_ts);
  check_close("Euler linspace sigmas", lin->sigmas(), euler_lin_sigmas);
  CHECK(lin->init_noise_sigma() == euler_lin_sigmas.front());  // linspace: sigma_max itself
  check_close("Euler linspace 10 steps", run(*lin, 10), euler_lin_final);

  const std::string sd = R"("beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012)";
  auto k = from_json(R"({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true, )" + sd + "}");
  k->set_timesteps(10);
  check_close("Euler Karras timesteps", k->timesteps(), euler_karras_ts, 1e-3, 0);
  check_close("Euler Karras sigmas", k->sigmas(), euler_karras_sigmas, 1e-6, 1e-6);
  check_close("Euler Karras 10 steps", run(*k, 10), euler_karras_final);
  // The option overrides the config either way.
  auto k2 = from_json(R"({"_class_name": "EulerDiscreteScheduler", )" + sd + "}", {}, SchedulerOptions{0.0, true});
  k2->set_timesteps(10);
  CHECK(max_abs_diff(k2->sigmas(), k->sigmas()) == 0);
  auto k3 = from_json(R"({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true, )" + sd + "}", {},
                      SchedulerOptions{0.0, false});
  k3->set_timesteps(10);
  CHECK(k3->describe().at("use_karras_sigmas") == false);
  CHECK(max_abs_diff(k3->sigmas(), k->sigmas()) > 1e-3);

  // Karras formula by hand: sigma_i = (max^(1/7) + i/(n-1) (min^(1/7) - max^(1/7)))^7 between the
  // extreme interpolated sigmas.
  const double smax = euler_karras_sigmas.front(), smin = euler_karras_sigmas[9];
  for (int i = 0; i < 10; ++i) {
    const double r = i / 9.0;
    const double want =
        std::pow(std::pow(smax, 1 / 7.0) + r * (std::pow(smin, 1 / 7.0) - std::pow(smax, 1 / 7.0)), 7.0);
    CHECK(k->sigmas()[i].item<double>() == doctest::Approx(want).epsilon(1e-6));
  }

  auto ex = from_json(R"({"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true, "sigma_min": 0.05,
                          "sigma_max": 10.0, "final_sigmas_type": "sigma_min", "timestep_spacing": "trailing", )" +
                      sd + "}");
  ex->set_timesteps(6);
  check_close("Euler exponential timesteps", ex->timesteps(), euler_exp_ts, 1e-3, 0);
  check_close("Euler exponential sigmas", ex->sigmas(), euler_exp_sigmas, 1e-6, 1e-6);

  auto ll = from_json(R"({"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"})");
  ll->set_timesteps(5);
  check_close("Euler log_linear sigmas", ll->sigmas(), euler_loglin_sigmas, 1e-6, 1e-6);

  auto c = from_json(R"({"_class_name": "EulerDiscreteScheduler", "prediction_type": "v_prediction",
                         "timestep_type": "continuous", )" +
                     sd + "}");
  c->set_timesteps(5);
  check_close("Euler continuous timesteps (0.25 log sigma)", c->timesteps(), euler_cont_ts, 1e-6, 1e-6);
  check_close("Euler v_prediction 5 steps", run(*c, 5), euler_cont_final);
}

TEST_CASE("schedulers: Euler ancestral from the PNDM config with a seeded generator") {
  auto s = make_scheduler(fixture_config(), SchedulerKind::euler_ancestral);
  s->set_timesteps(10);
  CHECK(s->timesteps() == eulera_fix_ts);
  CHECK(s->init_noise_sigma() == eulera_fix_init);
  auto gen = seeded(0);
  check_close("Euler ancestral 10 steps seed 0", run(*s, 10, &gen), eulera_fix_final);
}

// -------------------------------------------------------------------------------------------------
// DPM-Solver++.

TEST_CASE("schedulers: DPM-Solver++ 2M from the PNDM config, with Karras sigmas, order 3 and Heun") {
  auto s = make_scheduler(fixture_config(), SchedulerKind::dpmpp_2m);
  s->set_timesteps(10);
  CHECK(s->timesteps() == dpm_fix_ts);
  check_close("DPM sigmas", s->sigmas(), dpm_fix_sigmas);
  check_close("DPM 10 steps", run(*s, 10), dpm_fix_final);
  s->set_timesteps(10);
  auto noise = torch::linspace(1.0, -1.0, 16).reshape({1, 4, 2, 2});
  check_close("DPM add_noise", s->add_noise(x0(), noise, s->timesteps()[3]), dpm_add_noise);

  auto k = from_json(R"({"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
                         "beta_start": 0.00085, "beta_end": 0.012})",
                     {}, SchedulerOptions{0.0, true});
  k->set_timesteps(10);
  CHECK(k->timesteps() == dpm_karras_ts);
  check_close("DPM Karras sigmas", k->sigmas(), dpm_karras_sigmas, 1e-6, 1e-6);
  check_close("DPM Karras 10 steps", run(*k, 10), dpm_karras_final);

  auto o3 = from_json(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3, "use_lu_lambdas": true,
                          "lower_order_final": false})");
  o3->set_timesteps(8);
  CHECK(o3->timesteps() == dpm_o3_ts);
  check_close("DPM lu lambdas sigmas", o3->sigmas(), dpm_o3_sigmas, 1e-6, 1e-6);
  check_close("DPM order 3, 8 steps", run(*o3, 8), dpm_o3_final);

  auto h = from_json(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_type": "heun",
                         "prediction_type": "v_prediction", "timestep_spacing": "trailing",
                         "beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1})");
  h->set_timesteps(7);
  CHECK(h->timesteps() == dpm_heun_ts);
  check_close("DPM cosine clipped sigmas", h->sigmas(), dpm_heun_sigmas, 1e-6, 1e-6);
  check_close("DPM Heun v_prediction 7 steps", run(*h, 7), dpm_heun_final);
}

// -------------------------------------------------------------------------------------------------
// Invariant: with the exact noise of a known x0 as model output, the ODE solvers land on x0.

TEST_CASE("schedulers: an exact denoiser recovers x0 (DDIM, Euler, DPM-Solver++)") {
  const auto target = x0();
  const auto noise0 = torch::linspace(1.0, -1.0, 16).reshape({1, 4, 2, 2});
  const std::string sd = R"("beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012)";
  {  // DDIM (VP): eps = (x - sqrt(ac_t) x0) / sqrt(1 - ac_t); set_alpha_to_one makes the end exact.
    auto s =
        from_json(R"({"_class_name": "DDIMScheduler", "clip_sample": false, "set_alpha_to_one": true, )" + sd + "}");
    s->set_timesteps(20);
    const auto& ac = s->alphas_cumprod();
    const auto t0 = static_cast<std::int64_t>(s->timesteps()[0]);
    auto x = ac[t0].sqrt() * target + (1 - ac[t0]).sqrt() * noise0;
    for (double t : s->timesteps()) {
      const auto a = ac[static_cast<std::int64_t>(t)];
      x = s->step((x - a.sqrt() * target) / (1 - a).sqrt(), t, x);
    }
    const double d = max_abs_diff(x, target);
    MESSAGE("DDIM exact denoiser: max |x - x0| " << d);
    CHECK(d < 1e-4);
  }
  for (const char* karras : {"false", "true"}) {  // Euler (VE): x = x0 + sigma eps
    auto s = from_json(R"({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": )" + std::string(karras) +
                       ", " + sd + "}");
    s->set_timesteps(15);
    auto x = target + s->init_noise_sigma() * noise0;
    for (std::size_t i = 0; i < s->timesteps().size(); ++i) {
      const double t = s->timesteps()[i];
      (void)s->scale_model_input(x, t);
      x = s->step((x - target) / s->sigmas()[static_cast<std::int64_t>(i)], t, x);
    }
    const double d = max_abs_diff(x, target);
    MESSAGE("Euler (karras " << std::string(karras) << ") exact denoiser: max |x - x0| " << d);
    CHECK(d < 1e-4);
  }
  for (const char* karras : {"false", "true"}) {  // DPM-Solver++ (VP in sigma form)
    auto s = from_json(R"({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": )" + std::string(karras) +
                       ", " + sd + "}");
    s->set_timesteps(15);
    const auto coeffs = [&](std::size_t i) {
      auto sig = s->sigmas()[static_cast<std::int64_t>(i)];
      auto alpha = 1 / (sig * sig + 1).sqrt();
      return std::make_pair(alpha, sig * alpha);
    };
    auto [a0, s0] = coeffs(0);
    auto x = a0 * target + s0 * noise0;
    for (std::size_t i = 0; i < s->timesteps().size(); ++i) {
      auto [a, sg] = coeffs(i);
      x = s->step((x - a * target) / sg, s->timesteps()[i], x);
    }
    const double d = max_abs_diff(x, target);
    MESSAGE("DPM-Solver++ (karras " << std::string(karras) << ") exact denoiser: max |x - x0| " << d);
    CHECK(d < 1e-4);
  }
}

// -------------------------------------------------------------------------------------------------
// Configuration: from_config semantics, names, errors.

TEST_CASE("schedulers: names and from_config key handling") {
  using lli::schedulers::parse_scheduler_name;
  CHECK_FALSE(parse_scheduler_name("auto").has_value());
  CHECK(parse_scheduler_name("pndm") == SchedulerKind::pndm);
  CHECK(parse_scheduler_name("ddim") == SchedulerKind::ddim);
  CHECK(parse_scheduler_name("euler") == SchedulerKind::euler);
  CHECK(parse_scheduler_name("euler-a") == SchedulerKind::euler_ancestral);
  CHECK(parse_scheduler_name("dpm++2m") == SchedulerKind::dpmpp_2m);
  CHECK(has(error_of<lli::UsageError>([] { parse_scheduler_name("heun"); }), "heun"));
  CHECK(lli::schedulers::scheduler_class_name(SchedulerKind::euler_ancestral) == "EulerAncestralDiscreteScheduler");
  CHECK(lli::schedulers::scheduler_cli_name(SchedulerKind::dpmpp_2m) == "dpm++2m");

  // Keys listed in _use_default_values were defaults of the saving class: the new class uses its own.
  auto e = from_json(R"({"_class_name": "PNDMScheduler", "timestep_spacing": "leading", "steps_offset": 1,
                         "_use_default_values": ["timestep_spacing"], "_diffusers_version": "0.31.0"})",
                     SchedulerKind::euler);
  CHECK(e->describe().at("timestep_spacing") == "linspace");
  CHECK(e->describe().at("steps_offset") == 1);
  // Unknown keys are ignored (diffusers warns); keys of the class come from the file.
  auto p = from_json(R"({"_class_name": "PNDMScheduler", "some_future_key": 3, "set_alpha_to_one": true})");
  CHECK(p->describe().at("set_alpha_to_one") == true);
  CHECK_FALSE(p->describe().contains("some_future_key"));

  // Python's json writes -Infinity (DPM's lambda_min_clipped default).
  lli::test::TempDir dir;
  {
    std::ofstream f(dir / "scheduler_config.json");
    f << R"({"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "note": "-Infinity stays"})";
  }
  auto d = make_scheduler(lli::schedulers::load_scheduler_config(dir / "scheduler_config.json"));
  CHECK(d->describe().at("lambda_min_clipped") == "-Infinity");
  d->set_timesteps(10);
  CHECK(d->timesteps() == dpm_linspace);
}

TEST_CASE("schedulers: configuration errors name the file and the key") {
  const auto model_error = [](const std::string& text, std::optional<SchedulerKind> kind = {}) {
    return error_of<lli::ModelError>([&] { from_json(text, kind); });
  };
  auto m = model_error(R"({"_class_name": "DDIMScheduler", "beta_schedule": "cubic"})");
  MESSAGE(m);
  CHECK(has(m, "test_scheduler_config.json"));
  CHECK(has(m, "beta_schedule"));
  CHECK(has(m, "cubic"));
  m = model_error(R"({"_class_name": "LMSDiscreteScheduler"})");
  CHECK(has(m, "_class_name"));
  CHECK(has(m, "LMSDiscreteScheduler"));
  CHECK(has(model_error(R"({"beta_schedule": "linear"})"), "_class_name"));  // auto needs a class
  CHECK(model_error(R"({"beta_schedule": "linear"})", SchedulerKind::ddim) == "<no error>");
  struct Refused {
    std::string json;
    std::string key;
  };
  const std::vector<Refused> refused = {
      {R"({"_class_name": "PNDMScheduler", "prediction_type": "sample"})", "prediction_type"},
      {R"({"_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "sample"})", "prediction_type"},
      {R"({"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": true})", "use_beta_sigmas"},
      {R"({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true, "use_exponential_sigmas": true})",
       "use_exponential_sigmas"},
      {R"({"_class_name": "EulerDiscreteScheduler", "timestep_type": "fancy"})", "timestep_type"},
      {R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"})", "algorithm_type"},
      {R"({"_class_name": "DPMSolverMultistepScheduler", "variance_type": "learned_range"})", "variance_type"},
      {R"({"_class_name": "DPMSolverMultistepScheduler", "use_exponential_sigmas": true})", "use_exponential_sigmas"},
      {R"({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 4})", "solver_order"},
      {R"({"_class_name": "DDIMScheduler", "timestep_spacing": "uniform"})", "timestep_spacing"},
      {R"({"_class_name": "DDIMScheduler", "steps_offset": "one"})", "steps_offset"},
      {R"({"_class_name": "DDIMScheduler", "trained_betas": [0.1, 0.2]})", "trained_betas"},
  };
  for (const auto& r : refused) {
    m = model_error(r.json);
    CHECK_MESSAGE(has(m, "test_scheduler_config.json: " + r.key), r.json << " -> " << m);
  }
  CHECK(has(
      error_of<lli::ModelError>([] { lli::schedulers::load_scheduler_config("/nonexistent/scheduler_config.json"); }),
      "/nonexistent/scheduler_config.json"));
}

TEST_CASE("schedulers: options and misuse") {
  CHECK(has(error_of<lli::UsageError>([] {
              from_json(R"({"_class_name": "PNDMScheduler"})", {}, SchedulerOptions{0.0, true});
            }),
            "--karras"));
  CHECK(has(error_of<lli::UsageError>([] {
              from_json(R"({"_class_name": "DDIMScheduler"})", {}, SchedulerOptions{-1.0, {}});
            }),
            "--eta"));
  auto s = from_json(R"({"_class_name": "EulerDiscreteScheduler"})");
  CHECK(has(error_of<lli::RuntimeError>([&] { s->step(x0(), 999, x0()); }), "set_timesteps"));
  CHECK(error_of<lli::InputError>([&] { s->set_timesteps(0); }) != "<no error>");
  CHECK(error_of<lli::InputError>([&] { s->set_timesteps(1001); }) != "<no error>");
  s->set_timesteps(2);
  CHECK(has(error_of<lli::RuntimeError>([&] { s->step(x0(), 998.0, x0()); }), "not in the schedule"));
  s->set_timesteps(1);
  auto x = s->step(model(x0()), s->timesteps()[0], x0());
  CHECK(error_of<lli::RuntimeError>([&] { s->step(model(x), s->timesteps()[0], x); }) != "<no error>");  // past the end
}
