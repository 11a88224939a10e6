//! Ports: the typed output of an operator, holding its consumers' factories.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::graph::context::BuildCtx;
use crate::operator::{OutputTag, SideBuffer, SideChannel};
use crate::record::Data;
use crate::runtime::push::{BoxPush, Discard, FanOut};

pub(crate) type ConsumerFactory<T> = Box<dyn Fn(&mut BuildCtx<'_>) -> Result<BoxPush<T>>>;

pub(crate) struct Port<T> {
    consumers: RefCell<Vec<ConsumerFactory<T>>>,
}

/// Type-erased view of a port, for validation.
pub(crate) trait AnyPort {
    fn consumer_count(&self) -> usize;
}

impl<T: Data> AnyPort for Port<T> {
    fn consumer_count(&self) -> usize {
        self.consumers.borrow().len()
    }
}

impl<T: Data> Port<T> {
    pub(crate) fn new() -> Self {
        Self {
            consumers: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn add(&self, consumer: ConsumerFactory<T>) {
        self.consumers.borrow_mut().push(consumer);
    }

    /// Builds the push tree below this port for one subtask.
    pub(crate) fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<BoxPush<T>> {
        let consumers = self.consumers.borrow();
        match consumers.len() {
            0 => Ok(Box::new(Discard)),
            1 => consumers[0](ctx),
            _ => {
                let pushes = consumers
                    .iter()
                    .map(|c| c(ctx))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Box::new(FanOut(pushes)))
            }
        }
    }
}

type SideBuild = Box<dyn Fn(&mut BuildCtx<'_>) -> Result<Box<dyn SideChannel>>>;

struct SideEntry {
    tag: u64,
    port: Rc<dyn Any>,
    build: SideBuild,
}

/// The side-output ports of one operator, by tag.
#[derive(Default)]
pub(crate) struct SideRegistry {
    entries: RefCell<Vec<SideEntry>>,
}

impl SideRegistry {
    /// The port for `tag`, created on first use; `Ok((port, created))`.
    pub(crate) fn port<T: Data>(&self, tag: &OutputTag<T>) -> Result<(Rc<Port<T>>, bool)> {
        let id = tag.id();
        if let Some(e) = self.entries.borrow().iter().find(|e| e.tag == id) {
            let port = Rc::clone(&e.port)
                .downcast::<Port<T>>()
                .map_err(|_| Error::Internal(format!("side output {tag:?} has two types")))?;
            return Ok((port, false));
        }
        let port = Rc::new(Port::<T>::new());
        let for_build = Rc::clone(&port);
        self.entries.borrow_mut().push(SideEntry {
            tag: id,
            port: Rc::clone(&port) as Rc<dyn Any>,
            build: Box::new(move |ctx| {
                let next = for_build.build(ctx)?;
                Ok(Box::new(SideBuffer::new(id, next)) as Box<dyn SideChannel>)
            }),
        });
        Ok((port, true))
    }

    pub(crate) fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Vec<Box<dyn SideChannel>>> {
        self.entries
            .borrow()
            .iter()
            .map(|e| (e.build)(ctx))
            .collect()
    }
}
