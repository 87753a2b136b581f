-- The groups of the designated-intractable-disease section: every designated disease
-- (public reference table). / 指定難病の一覧（公開の参照表）
SELECT disease_no AS key, name_ja, name_en
FROM disease
ORDER BY disease_no
