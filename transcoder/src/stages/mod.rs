//! The steps every transcode is made of, each on its own: inputs prepared on local disk, the
//! composite encoded, the result published (uploaded, measured, recorded in the job).

pub(crate) mod encode;
pub(crate) mod prepare;
pub(crate) mod publish;
