//! Checks a spec and works out what every layer holds on every tower: shapes, parameters,
//! multiply-adds, exchanges. Everything that runs a network (the CPU reference, the GPU step,
//! the summary table) reads the plan rather than re-deriving shapes.

use super::spec::{Connect, Conv, Fc, Layer, MaxPool, NetSpec, Placement};
use anyhow::{Result, bail};

/// The shape of one sample's activation: channels × height × width (`units × 1 × 1` after an fc
/// layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.h == 1 && self.w == 1 {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.h, self.w, self.c)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    pub index: usize,
    pub layer: Layer,
    /// What each active tower reads, per sample (for `Connect::All` the concatenation of every
    /// tower's previous output).
    pub input: Shape,
    /// What each active tower writes, per sample.
    pub output: Shape,
    /// How many towers hold this layer's output: all of them, or only tower 0.
    pub active_towers: usize,
    /// Whether the towers exchange their previous outputs to feed this layer.
    pub exchange: bool,
    /// Weights and biases of the whole layer.
    pub params: usize,
    /// Multiply-adds per image of the whole layer (weighted layers only, as the paper counts).
    pub macs: usize,
    /// A convolution whose ReLU (the next layer) is fused into it: the convolution writes the
    /// ReLU's output directly (one pass over it instead of three), the ReLU's forward is
    /// skipped, and the convolution keeps no output of its own (its backward pass reads only its
    /// input and the ReLU's gradient). Decided here, once, for every device.
    pub fuses_relu: bool,
}

impl LayerPlan {
    pub fn name(&self) -> &str {
        self.layer.name()
    }
    /// This layer's output for the whole network, per sample.
    pub fn output_total(&self) -> Shape {
        Shape {
            c: self.output.c * self.active_towers,
            ..self.output
        }
    }
    /// Per-tower weight tensor shape (`[c_out, c_in, k, k]` or `[outputs, inputs]`), if any.
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match &self.layer {
            Layer::Conv(c) => Some(vec![
                self.output.c,
                self.input.c / c.groups,
                c.kernel,
                c.kernel,
            ]),
            Layer::Fc(_) => Some(vec![self.output.c, self.input.len()]),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub spec: NetSpec,
    pub layers: Vec<LayerPlan>,
    pub classes: usize,
}

impl Plan {
    pub fn new(spec: &NetSpec) -> Result<Plan> {
        let t = spec.towers;
        if t == 0 {
            bail!("towers: must be at least 1");
        }
        if spec.input.channels == 0 || spec.input.size == 0 {
            bail!("input: channels and size must be positive");
        }
        if spec.layers.is_empty() {
            bail!("layers: the network has no layers");
        }
        let mut names = std::collections::HashSet::new();
        // The image is replicated to every tower.
        let mut prev = Shape {
            c: spec.input.channels,
            h: spec.input.size,
            w: spec.input.size,
        };
        let mut prev_active = t;
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, layer) in spec.layers.iter().enumerate() {
            let at = |field: &str| format!("layers[{i}] ({}).{field}", layer.name());
            if !names.insert(layer.name().to_string()) {
                bail!("{}: the name is used twice", at("name"));
            }
            let plan = LayerStep {
                i,
                layer,
                prev,
                prev_active,
                towers: t,
            }
            .plan()?;
            prev = plan.output;
            prev_active = plan.active_towers;
            layers.push(plan);
        }
        let last = layers.last().expect("checked non-empty");
        let Layer::Fc(_) = last.layer else {
            bail!(
                "layers[{}] ({}): the last layer must be the fc classifier",
                last.index,
                last.name()
            );
        };
        let classes = last.output_total().c;
        mark_fused_relus(&mut layers);
        Ok(Plan {
            spec: spec.clone(),
            layers,
            classes,
        })
    }

    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    pub fn macs(&self) -> usize {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Refuses to read layer `l`'s output where it is not kept: a convolution whose ReLU is
    /// fused into it writes the ReLU's output instead (the next layer holds it).
    pub fn check_output_kept(&self, l: usize) -> Result<()> {
        let lp = &self.layers[l];
        if lp.fuses_relu {
            bail!(
                "{}'s output is not kept: its ReLU is fused into it, so {} holds the same values after the ReLU",
                lp.name(),
                self.layers[l + 1].name()
            );
        }
        Ok(())
    }

    pub fn layer(&self, name: &str) -> Option<&LayerPlan> {
        self.layers.iter().find(|l| l.name() == name)
    }

    /// The per-layer table `alexnet model` prints.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let t = self.spec.towers;
        writeln!(
            s,
            "{} ({} tower{}, input {}x{}x{}, {} augmentation)",
            self.spec.name,
            t,
            if t == 1 { "" } else { "s" },
            self.spec.input.size,
            self.spec.input.size,
            self.spec.input.channels,
            self.spec.augment.describe()
        )
        .unwrap();
        writeln!(
            s,
            "{:<10} {:<12} {:>12} {:>12} {:>7} {:<26} {:>12} {:>14}",
            "layer", "type", "output", "per tower", "towers", "input", "params", "mult-adds"
        )
        .unwrap();
        for l in &self.layers {
            let towers = if l.active_towers == t {
                t.to_string()
            } else {
                "first".into()
            };
            let input = match (&l.layer, l.exchange) {
                (Layer::Conv(_) | Layer::Fc(_), true) => "all towers (exchange)".to_string(),
                (Layer::Conv(_) | Layer::Fc(_), false) if l.index == 0 => "image".to_string(),
                _ => "own tower".to_string(),
            };
            let num = |v: usize| {
                if v == 0 {
                    "-".to_string()
                } else {
                    group_digits(v)
                }
            };
            writeln!(
                s,
                "{:<10} {:<12} {:>12} {:>12} {:>7} {:<26} {:>12} {:>14}",
                l.name(),
                l.layer.kind(),
                l.output_total().to_string(),
                l.output.to_string(),
                towers,
                input,
                num(l.params),
                num(l.macs)
            )
            .unwrap();
        }
        writeln!(
            s,
            "total: {} parameters, {:.1} M multiply-adds per image ({} classes)",
            group_digits(self.params()),
            self.macs() as f64 / 1e6,
            self.classes
        )
        .unwrap();
        s
    }
}

/// Planning layer `i` from what the layer before it left: the shape of its output per tower
/// and on how many towers.
struct LayerStep<'a> {
    i: usize,
    layer: &'a Layer,
    prev: Shape,
    prev_active: usize,
    towers: usize,
}

impl LayerStep<'_> {
    /// Where in the spec a field of this layer is, for messages.
    fn at(&self, field: &str) -> String {
        format!("layers[{}] ({}).{field}", self.i, self.layer.name())
    }

    fn plan(&self) -> Result<LayerPlan> {
        Ok(match self.layer {
            Layer::Conv(c) => self.conv(c)?,
            Layer::Fc(f) => self.fc(f)?,
            Layer::MaxPool(p) => self.pool(p)?,
            Layer::Lrn(l) => {
                if l.size % 2 == 0 {
                    bail!(
                        "{}: the window must be odd, not {}",
                        self.at("size"),
                        l.size
                    );
                }
                if l.beta <= 0.0 || l.k <= 0.0 && l.alpha <= 0.0 {
                    bail!(
                        "{}: beta must be positive and k + alpha·Σx² must stay positive",
                        self.at("beta")
                    );
                }
                self.unchanged()
            }
            Layer::SpatialNorm(l) => {
                if l.size % 2 == 0 {
                    bail!(
                        "{}: the window must be odd, not {}",
                        self.at("size"),
                        l.size
                    );
                }
                if l.beta <= 0.0 || l.k <= 0.0 {
                    bail!("{}: beta and k must be positive", self.at("beta"));
                }
                self.unchanged()
            }
            Layer::Dropout(d) => {
                if !(0.0..1.0).contains(&d.p) {
                    bail!("{}: must be in [0, 1), not {}", self.at("p"), d.p);
                }
                self.unchanged()
            }
            Layer::Relu(_) | Layer::Tanh(_) => self.unchanged(),
        })
    }

    /// An elementwise layer: the previous output's shape, on its towers.
    fn unchanged(&self) -> LayerPlan {
        elementwise(self.i, self.layer, self.prev, self.prev, self.prev_active)
    }

    /// A weighted layer's input per tower, its active towers, and whether it exchanges.
    fn weighted_input(
        &self,
        connect: Connect,
        placement: Placement,
    ) -> Result<(Shape, usize, bool)> {
        let first = self.i == 0;
        let active = if placement == Placement::First {
            1
        } else {
            self.towers
        };
        if first {
            return Ok((self.prev, active, false));
        }
        match connect {
            Connect::All => Ok((
                Shape {
                    c: self.prev.c * self.prev_active,
                    ..self.prev
                },
                active,
                self.prev_active > 1,
            )),
            Connect::Own if active > self.prev_active => bail!(
                "{}: \"own\" reads the previous layer on every tower, but it lives on tower 0 only; use \"all\"",
                self.at("input")
            ),
            Connect::Own if placement == Placement::First && self.towers > 1 => bail!(
                "{}: a layer placed on the first tower alone must read \"all\" towers",
                self.at("input")
            ),
            Connect::Own => Ok((self.prev, active, false)),
        }
    }

    /// `total` units split evenly across `active` towers.
    fn split(&self, total: usize, field: &str, active: usize) -> Result<usize> {
        if total == 0 {
            bail!("{}: must be positive", self.at(field));
        }
        if total % active != 0 {
            bail!(
                "{}: {total} do not split evenly across {active} towers",
                self.at(field)
            );
        }
        Ok(total / active)
    }

    fn conv(&self, c: &Conv) -> Result<LayerPlan> {
        let (input, active, exchange) = self.weighted_input(c.input, Placement::Split)?;
        let per_tower = self.split(c.filters, "filters", active)?;
        if c.stride == 0 {
            bail!("{}: must be positive", self.at("stride"));
        }
        let pad_end = c.pad_end.unwrap_or(c.pad);
        if c.kernel == 0
            || c.kernel > input.h + c.pad + pad_end
            || c.kernel > input.w + c.pad + pad_end
        {
            bail!(
                "{}: a {}x{} kernel does not fit the {}x{} input plus padding",
                self.at("kernel"),
                c.kernel,
                c.kernel,
                input.h,
                input.w
            );
        }
        if c.groups == 0 || input.c % c.groups != 0 || per_tower % c.groups != 0 {
            bail!(
                "{}: {} input channels and {per_tower} filters per tower do not split into {} groups",
                self.at("groups"),
                input.c,
                c.groups
            );
        }
        let oh = (input.h + c.pad + pad_end - c.kernel) / c.stride + 1;
        let ow = (input.w + c.pad + pad_end - c.kernel) / c.stride + 1;
        let taps = input.c / c.groups * c.kernel * c.kernel;
        Ok(LayerPlan {
            index: self.i,
            layer: self.layer.clone(),
            input,
            output: Shape {
                c: per_tower,
                h: oh,
                w: ow,
            },
            active_towers: active,
            exchange,
            params: c.filters * taps + c.filters,
            macs: oh * ow * c.filters * taps,
            fuses_relu: false,
        })
    }

    fn fc(&self, f: &Fc) -> Result<LayerPlan> {
        let (input, active, exchange) = self.weighted_input(f.input, f.placement)?;
        let per_tower = self.split(f.units, "units", active)?;
        Ok(LayerPlan {
            index: self.i,
            layer: self.layer.clone(),
            input,
            output: Shape {
                c: per_tower,
                h: 1,
                w: 1,
            },
            active_towers: active,
            exchange,
            params: f.units * input.len() + f.units,
            macs: f.units * input.len(),
            fuses_relu: false,
        })
    }

    fn pool(&self, p: &MaxPool) -> Result<LayerPlan> {
        if p.size == 0 || p.stride == 0 {
            bail!("{}: size and stride must be positive", self.at("size"));
        }
        if p.size > self.prev.h || p.size > self.prev.w {
            bail!(
                "{}: a {}x{} window does not fit the {}x{} input",
                self.at("size"),
                p.size,
                p.size,
                self.prev.h,
                self.prev.w
            );
        }
        let out = Shape {
            c: self.prev.c,
            h: (self.prev.h - p.size) / p.stride + 1,
            w: (self.prev.w - p.size) / p.stride + 1,
        };
        Ok(elementwise(
            self.i,
            self.layer,
            self.prev,
            out,
            self.prev_active,
        ))
    }
}

/// Sets `fuses_relu` on each convolution followed by a ReLU on the same towers that reads it
/// without an exchange.
fn mark_fused_relus(layers: &mut [LayerPlan]) {
    for l in 1..layers.len() {
        let (a, b) = (&layers[l - 1], &layers[l]);
        layers[l - 1].fuses_relu = matches!(a.layer, Layer::Conv(_))
            && matches!(b.layer, Layer::Relu(_))
            && !b.exchange
            && a.active_towers == b.active_towers;
    }
}

fn elementwise(
    index: usize,
    layer: &Layer,
    input: Shape,
    output: Shape,
    active: usize,
) -> LayerPlan {
    LayerPlan {
        index,
        layer: layer.clone(),
        input,
        output,
        active_towers: active,
        exchange: false,
        params: 0,
        macs: 0,
        fuses_relu: false,
    }
}

/// 60965224 → "60,965,224".
pub fn group_digits(v: usize) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
