-- TUILiveKit (docs/live.md): which product a room belongs to. Every room seen so far came
-- from TUIRoomKit callbacks.
ALTER TABLE rooms ADD COLUMN product text NOT NULL DEFAULT 'Room'
    CONSTRAINT rooms_product_known CHECK (product IN ('Room', 'Live'));
