//! The geometry of a convolution (`conv`): batch, channels, size, kernel, stride, padding and
//! groups, shared by the reference and every fast path.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub pad_end: usize,
    pub groups: usize,
}

impl ConvGeom {
    pub fn out_h(&self) -> usize {
        (self.h + self.pad + self.pad_end - self.k) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + self.pad + self.pad_end - self.k) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    pub fn w_len(&self) -> usize {
        self.c_out * (self.c_in / self.groups) * self.k * self.k
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    /// Input channels each filter sees.
    pub fn cin_per_group(&self) -> usize {
        self.c_in / self.groups
    }
    pub fn cout_per_group(&self) -> usize {
        self.c_out / self.groups
    }
    pub(super) fn check(&self, x: usize, w: usize, b: usize, y: usize) {
        assert!(
            self.groups > 0 && self.c_in % self.groups == 0 && self.c_out % self.groups == 0,
            "conv: {} input and {} output channels do not split into {} groups",
            self.c_in,
            self.c_out,
            self.groups
        );
        assert!(
            self.stride > 0
                && self.k > 0
                && self.k <= self.h + self.pad + self.pad_end
                && self.k <= self.w + self.pad + self.pad_end,
            "conv: the {}x{} window does not fit the padded input of {self:?}",
            self.k,
            self.k
        );
        assert_eq!(x, self.x_len(), "conv: input length for {self:?}");
        assert_eq!(w, self.w_len(), "conv: weight length for {self:?}");
        assert_eq!(b, self.c_out, "conv: bias length for {self:?}");
        assert_eq!(y, self.y_len(), "conv: output length for {self:?}");
    }
}
